"""The wire package: DNS messages as bytes, shared by kdns's authoritative side, its resolver
core and nodecache. It imports nothing else of kdns (an import-linter contract says so).

    constants  RR types, classes, rcodes, header flag bits, EDE codes, sizes
    names      names as wire bytes: text and label tuples <-> wire, suffixes, subdomains,
               the longest-suffix ZoneTable
    reader     the one name reader (bounded decompression), questions, a query's OPT
    records    the RR model: RR (decided, typed RDATA) and Record (wire RDATA), layouts
    writer     the one compressing writer, ``encode`` of a decided Answer
    header     the 8 header variants a reply takes (RD, CD, EDNS)
    edns       the OPT builder, a reply's OPT, a reply's size limit
    query      ``screen``, the screened ``Query``, the two error replies
    truncate   the two truncations, each with its RFC reason
    reply      reading an upstream's reply (``inspect`` -> ReplyFacts, Kind)
    bailiwick  which records of an upstream's reply we trust (``sanitize``)
"""

# The flat API: ``from kdns import dns`` then ``dns.A``, ``dns.screen``, ``dns.inspect``.
from kdns.dns.bailiwick import (
    Sanitized as Sanitized,
)
from kdns.dns.bailiwick import (
    sanitize as sanitize,
)
from kdns.dns.constants import (
    AA as AA,
)
from kdns.dns.constants import (
    AAAA as AAAA,
)
from kdns.dns.constants import (
    AD as AD,
)
from kdns.dns.constants import (
    ANY as ANY,
)
from kdns.dns.constants import (
    AXFR as AXFR,
)
from kdns.dns.constants import (
    BADVERS as BADVERS,
)
from kdns.dns.constants import (
    CD as CD,
)
from kdns.dns.constants import (
    CLASS_IN as CLASS_IN,
)
from kdns.dns.constants import (
    CNAME as CNAME,
)
from kdns.dns.constants import (
    DNAME as DNAME,
)
from kdns.dns.constants import (
    DNSSEC_PROOF as DNSSEC_PROOF,
)
from kdns.dns.constants import (
    EDE_NO_REACHABLE_AUTHORITY as EDE_NO_REACHABLE_AUTHORITY,
)
from kdns.dns.constants import (
    EDE_OPTION as EDE_OPTION,
)
from kdns.dns.constants import (
    EDE_STALE_ANSWER as EDE_STALE_ANSWER,
)
from kdns.dns.constants import (
    FORMERR as FORMERR,
)
from kdns.dns.constants import (
    HEADER_SIZE as HEADER_SIZE,
)
from kdns.dns.constants import (
    HINFO as HINFO,
)
from kdns.dns.constants import (
    IXFR as IXFR,
)
from kdns.dns.constants import (
    MIN_UDP_SIZE as MIN_UDP_SIZE,
)
from kdns.dns.constants import (
    MX as MX,
)
from kdns.dns.constants import (
    NOERROR as NOERROR,
)
from kdns.dns.constants import (
    NOTAUTH as NOTAUTH,
)
from kdns.dns.constants import (
    NOTIMP as NOTIMP,
)
from kdns.dns.constants import (
    NS as NS,
)
from kdns.dns.constants import (
    NSEC as NSEC,
)
from kdns.dns.constants import (
    NSEC3 as NSEC3,
)
from kdns.dns.constants import (
    NXDOMAIN as NXDOMAIN,
)
from kdns.dns.constants import (
    OPT as OPT,
)
from kdns.dns.constants import (
    POINTER_TO_QUESTION as POINTER_TO_QUESTION,
)
from kdns.dns.constants import (
    PTR as PTR,
)
from kdns.dns.constants import (
    QR as QR,
)
from kdns.dns.constants import (
    QUESTION_OFFSET as QUESTION_OFFSET,
)
from kdns.dns.constants import (
    RA as RA,
)
from kdns.dns.constants import (
    RD as RD,
)
from kdns.dns.constants import (
    REFUSED as REFUSED,
)
from kdns.dns.constants import (
    RRSIG as RRSIG,
)
from kdns.dns.constants import (
    SERVFAIL as SERVFAIL,
)
from kdns.dns.constants import (
    SOA as SOA,
)
from kdns.dns.constants import (
    SRV as SRV,
)
from kdns.dns.constants import (
    TC as TC,
)
from kdns.dns.constants import (
    TCP_MAX_SIZE as TCP_MAX_SIZE,
)
from kdns.dns.constants import (
    TXT as TXT,
)
from kdns.dns.constants import (
    A as A,
)
from kdns.dns.edns import (
    hot_path_opts as hot_path_opts,
)
from kdns.dns.edns import (
    opt_record as opt_record,
)
from kdns.dns.edns import (
    reply_opt as reply_opt,
)
from kdns.dns.edns import (
    size_limit as size_limit,
)
from kdns.dns.header import (
    header_variants as header_variants,
)
from kdns.dns.header import (
    heads as heads,
)
from kdns.dns.header import (
    variant_index as variant_index,
)
from kdns.dns.names import (
    MAX_LABEL as MAX_LABEL,
)
from kdns.dns.names import (
    MAX_NAME as MAX_NAME,
)
from kdns.dns.names import (
    ROOT as ROOT,
)
from kdns.dns.names import (
    Labels as Labels,
)
from kdns.dns.names import (
    T as T,
)
from kdns.dns.names import (
    ZoneNameError as ZoneNameError,
)
from kdns.dns.names import (
    ZoneTable as ZoneTable,
)
from kdns.dns.names import (
    from_labels as from_labels,
)
from kdns.dns.names import (
    is_subdomain as is_subdomain,
)
from kdns.dns.names import (
    suffixes as suffixes,
)
from kdns.dns.names import (
    to_labels as to_labels,
)
from kdns.dns.names import (
    to_text as to_text,
)
from kdns.dns.names import (
    to_wire as to_wire,
)
from kdns.dns.query import (
    ClientQuery as ClientQuery,
)
from kdns.dns.query import (
    Query as Query,
)
from kdns.dns.query import (
    error_reply as error_reply,
)
from kdns.dns.query import (
    recursive_error as recursive_error,
)
from kdns.dns.query import (
    screen as screen,
)
from kdns.dns.reader import (
    MAX_POINTER_HOPS as MAX_POINTER_HOPS,
)
from kdns.dns.reader import (
    Edns as Edns,
)
from kdns.dns.reader import (
    MessageError as MessageError,
)
from kdns.dns.reader import (
    Question as Question,
)
from kdns.dns.reader import (
    WireError as WireError,
)
from kdns.dns.reader import (
    parse_name as parse_name,
)
from kdns.dns.reader import (
    parse_question as parse_question,
)
from kdns.dns.reader import (
    parse_records as parse_records,
)
from kdns.dns.reader import (
    read_name as read_name,
)
from kdns.dns.reader import (
    read_question as read_question,
)
from kdns.dns.reader import (
    skip_rr as skip_rr,
)
from kdns.dns.records import (
    LAYOUTS as LAYOUTS,
)
from kdns.dns.records import (
    RR as RR,
)
from kdns.dns.records import (
    Answer as Answer,
)
from kdns.dns.records import (
    Parts as Parts,
)
from kdns.dns.records import (
    Record as Record,
)
from kdns.dns.records import (
    RRset as RRset,
)
from kdns.dns.records import (
    plain_name_end as plain_name_end,
)
from kdns.dns.records import (
    rdata_parts as rdata_parts,
)
from kdns.dns.records import (
    record_parts as record_parts,
)
from kdns.dns.records import (
    split_rdata as split_rdata,
)
from kdns.dns.reply import (
    MAX_CHAIN as MAX_CHAIN,
)
from kdns.dns.reply import (
    Kind as Kind,
)
from kdns.dns.reply import (
    ReplyFacts as ReplyFacts,
)
from kdns.dns.reply import (
    answer_chain as answer_chain,
)
from kdns.dns.reply import (
    classify as classify,
)
from kdns.dns.reply import (
    inspect as inspect,
)
from kdns.dns.reply import (
    negative_soa as negative_soa,
)
from kdns.dns.reply import (
    soa_negative_ttl as soa_negative_ttl,
)
from kdns.dns.truncate import (
    truncate as truncate,
)
from kdns.dns.truncate import (
    truncated_reply as truncated_reply,
)
from kdns.dns.writer import (
    Encoded as Encoded,
)
from kdns.dns.writer import (
    Writer as Writer,
)
from kdns.dns.writer import (
    encode as encode,
)
from kdns.dns.writer import (
    encode_batches as encode_batches,
)
