/*
 * kdns.serve._fastpath: the optional C accelerator of the UDP hot path.
 *
 * It mirrors kdns/dns/hotpath.py (the one Python definition of the hot-path shape rule, the
 * flag-variant index and the UDP size limit) and serves the hits of ``Responder.answer``
 * (kdns/serve/protocol.py) itself; everything else goes to the Python handler, so replies are
 * byte-identical to the Python path for every input. It reads no attribute of any Python
 * object: it is handed two contract objects built for it (kdns/serve/accel.py builds them):
 *
 * - ``Answers(opt, opt_do, max_udp_size)``: what hits are served from. ``publish(records,
 *   memo)`` installs a table's ``records`` dict and its memo's plain dict (kdns.table.Memo)
 *   when the Responder's table is swapped; ``publish(None, None)`` serves nothing.
 *   ``publish_cache(views, hit_log)`` (nodecache) installs the resolver cache's dict of
 *   ``CacheView``s (kdns/resolver/cache.py ``enable_views``) and the list a view is put in on
 *   its first hit since its last ``take()``.
 * - ``CacheView(entry, heads, tail, offsets, stored_at, ttl)``: one fresh cache entry as C serves
 *   it (``Hit.reply``'s bytes): the query's ID, ``heads[variant & 7]``, the client's question,
 *   ``tail`` with every TTL at ``offsets`` set to the seconds left (``ttl - int(now -
 *   stored_at)``, CLOCK_MONOTONIC: time.monotonic's clock), and the server's OPT; expired
 *   (0 seconds left) or too big for the client's UDP size, it is the fallback's. Its hits and
 *   their last two times are counted in it for Python to absorb. The dict is read lock-free
 *   under the GIL, as the memo is (below); the cache drops a view in the same locked operation
 *   that stores over, evicts or clears its entry.
 * - ``Loop(answers, fallback, deferred_sender, on_error, with_peer=False)``: one serving loop's
 *   state: the ``Answers``, the Python handler for a miss (``fallback(packet) -> Reply``, or
 *   with ``with_peer`` ``fallback(packet, peer)``: nodecache's handler), what a Deferred
 *   reply is called with (``deferred_sender(peer, packet, started_ns)``), what an internal error
 *   is counted with (``on_error()``), the stop flag (``stop()``), the divert flag
 *   (``set_divert``: the query log went on), the per-query cells of kdns/serve/tally.py
 *   (``read()``; ``LAYOUT`` here must equal ``tally.LAYOUT``) and ``answered``, the replies built
 *   here without Python (what tests check to prove the loop is engaged).
 *
 * Functions:
 * - ``fast_key(packet)``, ``udp_limit(packet, qend, variant, max_udp_size)``,
 *   ``assemble(packet, qend, variant, heads, body, opts)``: the C twins of kdns/dns/hotpath.py,
 *   exposed so tests/unit/test_hotpath.py can compare them with the Python ones.
 * - ``answer(answers, fallback, packet, tcp=False)``: one query in, the reply (or None) out.
 * - ``serve(sock_fd, loop)``: the blocking recvfrom/sendto loop of kdns.serve.udp: receive with
 *   the GIL released, answer a hit from ``answers`` into a reusable C buffer and send it without
 *   creating a Python object; a miss goes to ``fallback(packet)``, whose reply is sent as
 *   kdns.serve.udp sends it. Returns after a receive once ``loop.stop()`` was called, or when the
 *   divert flag is set: None, or the (packet, peer) just received, for the Python loop.
 *
 * A hit, step by step (hotpath.py and ``Responder.answer``):
 *   fast_key: (key, qend, variant) for the question-only / one-OPT shape, else the fallback
 *   entry = records.get(key), else memo.get(key) (None there: the fallback)
 *   body is a tuple (loadbalance rotations): body = body[query ID % len(body)]
 *   reply = assemble(...); sent if tcp or len <= udp_limit(...), else the fallback (truncation).
 * The memo is read lock-free: it is a plain dict (kdns.table.Memo) that Python writes only
 * while holding the GIL (one insert or one FIFO delete per dict operation, under its own lock
 * against other writers), and this file reads it only holding the GIL, taking a strong
 * reference to the entry before it lets go of the GIL; so it sees the dict before or after each
 * operation, never during one, and an entry it holds cannot be freed under it. Python's own
 * ``AnswerTable.cached`` looks at ``names`` (NODATA for existing names) before the memo; no key
 * is in both (a key only reaches the memo after failing that same ``names`` test), so the order
 * does not change a reply, and a NODATA-by-name key simply goes to the fallback here.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#define HEADER_SIZE 12
#define MIN_UDP_SIZE 512
#define RECEIVE_SIZE 65535 /* kdns.serve.udp.RECEIVE_SIZE */
#define SEND_CAPACITY 65536
#define OPT_SIZE 11 /* hotpath.OPT_SIZE: root owner, type, class, ttl, rdlength */
#define SEND_POLL_MS 1000
#define V_EDNS 4  /* hotpath.EDNS */
#define V_DO 8    /* hotpath.DO */
#define V_HEADS 7 /* hotpath.HEADS */

static const unsigned char QD_ONLY[8] = {0, 1, 0, 0, 0, 0, 0, 0};
static const unsigned char QD_AND_AR[8] = {0, 1, 0, 0, 0, 0, 0, 1};
static const unsigned char OPT_PREFIX[3] = {0, 0, 41};

/* --- the counters (kdns/serve/tally.py: the same cells, in the same order) ------------------ */

#define N_TYPES 19
#define N_FAMILIES 2
#define N_SIZES 15
#define N_DURATIONS 17
#define N_RCODES 32
#define N_PLUGINS 4
#define C_REQUESTS 0
#define C_DO_REQUESTS (C_REQUESTS + N_FAMILIES * N_TYPES)
#define C_REQUEST_SIZE (C_DO_REQUESTS + 1)
#define C_RESPONSE_SIZE (C_REQUEST_SIZE + N_SIZES + 1)
#define C_RESPONSES (C_RESPONSE_SIZE + N_SIZES + 1)
#define C_DURATION (C_RESPONSES + N_RCODES * N_PLUGINS)
#define C_DURATION_SUM_NS (C_DURATION + N_TYPES * N_DURATIONS)
#define C_CELLS (C_DURATION_SUM_NS + N_TYPES)
#define TYPE_OTHER (N_TYPES - 1)
#define PLUGIN_KUBERNETES 1
#define PLUGIN_FORWARD 2
#define PLUGIN_CACHE 3


static int
type_index(unsigned int qtype)
{
    switch (qtype) {
    case 1: return 0;    /* A */
    case 28: return 1;   /* AAAA */
    case 15: return 2;   /* MX */
    case 6: return 3;    /* SOA */
    case 5: return 4;    /* CNAME */
    case 12: return 5;   /* PTR */
    case 16: return 6;   /* TXT */
    case 2: return 7;    /* NS */
    case 33: return 8;   /* SRV */
    case 43: return 9;   /* DS */
    case 48: return 10;  /* DNSKEY */
    case 46: return 11;  /* RRSIG */
    case 47: return 12;  /* NSEC */
    case 50: return 13;  /* NSEC3 */
    case 65: return 14;  /* HTTPS */
    case 251: return 15; /* IXFR */
    case 252: return 16; /* AXFR */
    case 255: return 17; /* ANY */
    default: return TYPE_OTHER;
    }
}

/* tally.SIZE_BOUNDS: 0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16e3, 32e3, 48e3,
 * 64e3, then +Inf. */
static int
size_bucket(Py_ssize_t size)
{
    static const Py_ssize_t bounds[N_SIZES - 1] = {0, 100, 200, 300, 400, 511, 1023, 2047,
                                                  4095, 8291, 16000, 32000, 48000, 64000};
    for (int i = 0; i < N_SIZES - 1; i++) {
        if (size <= bounds[i]) {
            return i;
        }
    }
    return N_SIZES - 1;
}

static long long
monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now); /* time.perf_counter_ns's clock on Linux */
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

/* 0 for an IPv4 peer (also one mapped into IPv6), 1 for IPv6: tally.family_of. */
static int
peer_family(const struct sockaddr_storage *peer)
{
    if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)peer;
        return IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr) ? 0 : 1;
    }
    return 0;
}

/* tally.count, step for step: one answered query into ``cells``. */
static void
count_reply(unsigned long long *cells, const unsigned char *packet, Py_ssize_t n,
            const unsigned char *reply, Py_ssize_t size, int family, int deferred,
            long long elapsed_ns)
{
    int qtype = TYPE_OTHER;
    const unsigned char *zero =
        n > HEADER_SIZE ? memchr(packet + HEADER_SIZE, 0, (size_t)(n - HEADER_SIZE)) : NULL;
    if (zero != NULL) {
        Py_ssize_t end = zero - packet;
        if (n >= end + 3) {
            qtype = type_index(((unsigned int)packet[end + 1] << 8) | packet[end + 2]);
            if (n > end + 12 && memcmp(packet + end + 5, OPT_PREFIX, 3) == 0 &&
                (packet[end + 12] & 0x80)) {
                cells[C_DO_REQUESTS]++;
            }
        }
    }
    cells[C_REQUESTS + family * N_TYPES + qtype]++;
    cells[C_REQUEST_SIZE + size_bucket(n)]++;
    cells[C_REQUEST_SIZE + N_SIZES] += (unsigned long long)n;
    cells[C_RESPONSE_SIZE + size_bucket(size)]++;
    cells[C_RESPONSE_SIZE + N_SIZES] += (unsigned long long)size;
    if (size >= 12) {
        int rcode = reply[3] & 0xF;
        if (size >= 23 && memcmp(reply + size - 11, OPT_PREFIX, 3) == 0) {
            rcode |= (reply[size - 6] << 4) & 0x10;
        }
        int plugin;
        if (reply[2] & 0x04) {
            plugin = PLUGIN_KUBERNETES;
        }
        else if (deferred) {
            plugin = PLUGIN_FORWARD;
        }
        else if (rcode == 0 || rcode == 3) {
            plugin = PLUGIN_CACHE;
        }
        else {
            plugin = 0;
        }
        cells[C_RESPONSES + rcode * N_PLUGINS + plugin]++;
    }
    int bucket = 0;
    if (elapsed_ns > 0) {
        unsigned long long units = (unsigned long long)(elapsed_ns - 1) / 250000ULL;
        while (units) { /* the bit length */
            bucket++;
            units >>= 1;
        }
    }
    cells[C_DURATION + qtype * N_DURATIONS + (bucket < 16 ? bucket : 16)]++;
    cells[C_DURATION_SUM_NS + qtype] += (unsigned long long)(elapsed_ns > 0 ? elapsed_ns : 0);
}


/* --- the hot-path twins (kdns/dns/hotpath.py) -------------------------------------------- */

/* hotpath.fast_key's screening: the question's end (qend > 0) and ``*variant`` for a hot-path
 * shape, else 0. The key is then fold_key(packet, qend). Every length check comes before the
 * byte it guards is read. */
static Py_ssize_t
hp_shape(const unsigned char *p, Py_ssize_t n, int *variant)
{
    if (n <= HEADER_SIZE) {
        return 0;
    }
    const unsigned char *zero = memchr(p + HEADER_SIZE, 0, (size_t)(n - HEADER_SIZE));
    if (zero == NULL || (p[2] & 0xF8)) {
        return 0;
    }
    Py_ssize_t qend = (zero - p) + 5;
    int v = (p[2] & 1) | ((p[3] & 0x10) >> 3);
    if (memcmp(p + 4, QD_ONLY, 8) == 0) {
        if (n != qend) {
            return 0;
        }
    }
    else if (memcmp(p + 4, QD_AND_AR, 8) == 0 && n >= qend + OPT_SIZE &&
             memcmp(p + qend, OPT_PREFIX, 3) == 0 && p[qend + 6] == 0 &&
             n == qend + OPT_SIZE + ((p[qend + 9] << 8) | p[qend + 10])) {
        v |= V_EDNS | ((p[qend + 7] & 0x80) ? V_DO : 0);
    }
    else {
        return 0;
    }
    *variant = v;
    return qend;
}

/* The key of a shape hp_shape accepted, as a new bytes object (NULL with an exception). */
static PyObject *
hp_key(const unsigned char *p, Py_ssize_t qend)
{
    Py_ssize_t key_len = qend - HEADER_SIZE;
    PyObject *key = PyBytes_FromStringAndSize(NULL, key_len);
    if (key == NULL) {
        return NULL;
    }
    unsigned char *k = (unsigned char *)PyBytes_AS_STRING(key);
    Py_ssize_t name_len = key_len - 4;
    for (Py_ssize_t i = 0; i < name_len; i++) {
        unsigned char c = p[HEADER_SIZE + i];
        k[i] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c; /* bytes.lower() */
    }
    memcpy(k + name_len, p + qend - 4, 4); /* type and class: never case-folded */
    return key;
}

/* hotpath.udp_limit. */
static Py_ssize_t
hp_udp_limit(const unsigned char *p, Py_ssize_t qend, int variant, Py_ssize_t max_udp_size)
{
    if (!(variant & V_EDNS)) {
        return MIN_UDP_SIZE;
    }
    Py_ssize_t client = (p[qend + 3] << 8) | p[qend + 4];
    Py_ssize_t wanted = client > MIN_UDP_SIZE ? client : MIN_UDP_SIZE;
    return wanted < max_udp_size ? wanted : max_udp_size;
}

/* --- the contract objects -------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *records; /* dict or None: a table's records */
    PyObject *memo;    /* dict or None: a table's memo (kdns.table.Memo.entries) */
    PyObject *opt;     /* bytes: the server's OPT, DO clear */
    PyObject *opt_do;  /* bytes: DO set */
    Py_ssize_t max_udp_size;
    PyObject *cached;  /* dict or None: the resolver cache's views (kdns.resolver.cache) */
    PyObject *hit_log; /* list or None: where a view goes on its first hit since a take() */
} AnswersObject;

static PyTypeObject AnswersType;

static int
answers_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"opt", "opt_do", "max_udp_size", NULL};
    AnswersObject *answers = (AnswersObject *)self;
    PyObject *opt, *opt_do;
    Py_ssize_t max_udp_size;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "SSn:Answers", kwlist, &opt, &opt_do,
                                     &max_udp_size)) {
        return -1;
    }
    if (!PyBytes_CheckExact(opt) || !PyBytes_CheckExact(opt_do) || max_udp_size < 0) {
        PyErr_SetString(PyExc_TypeError, "Answers(opt: bytes, opt_do: bytes, max_udp_size >= 0)");
        return -1;
    }
    Py_INCREF(opt);
    Py_XSETREF(answers->opt, opt);
    Py_INCREF(opt_do);
    Py_XSETREF(answers->opt_do, opt_do);
    answers->max_udp_size = max_udp_size;
    if (answers->records == NULL) {
        Py_INCREF(Py_None);
        answers->records = Py_None;
        Py_INCREF(Py_None);
        answers->memo = Py_None;
        Py_INCREF(Py_None);
        answers->cached = Py_None;
        Py_INCREF(Py_None);
        answers->hit_log = Py_None;
    }
    return 0;
}

static void
answers_dealloc(PyObject *self)
{
    AnswersObject *answers = (AnswersObject *)self;
    Py_CLEAR(answers->records);
    Py_CLEAR(answers->memo);
    Py_CLEAR(answers->opt);
    Py_CLEAR(answers->opt_do);
    Py_CLEAR(answers->cached);
    Py_CLEAR(answers->hit_log);
    Py_TYPE(self)->tp_free(self);
}

PyDoc_STRVAR(answers_publish_doc,
"publish(records, memo)\n--\n\n"
"Serve hits from ``records`` (a dict) and ``memo`` (a dict), or from nothing (None, None).");

static PyObject *
answers_publish(PyObject *self, PyObject *args)
{
    PyObject *records, *memo;
    if (!PyArg_ParseTuple(args, "OO:publish", &records, &memo)) {
        return NULL;
    }
    if ((records != Py_None && !PyDict_CheckExact(records)) ||
        (memo != Py_None && !PyDict_CheckExact(memo))) {
        PyErr_SetString(PyExc_TypeError, "publish(records: dict | None, memo: dict | None)");
        return NULL;
    }
    AnswersObject *answers = (AnswersObject *)self;
    Py_INCREF(records);
    Py_XSETREF(answers->records, records);
    Py_INCREF(memo);
    Py_XSETREF(answers->memo, memo);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(answers_publish_cache_doc,
"publish_cache(views, hit_log)\n--\n\n"
"Serve fresh resolver-cache hits from ``views`` (a dict of CacheView by view key), putting\n"
"each view in ``hit_log`` (a list) on its first hit since its last take(); or from nothing\n"
"(None, None).");

static PyObject *
answers_publish_cache(PyObject *self, PyObject *args)
{
    PyObject *views, *hit_log;
    if (!PyArg_ParseTuple(args, "OO:publish_cache", &views, &hit_log)) {
        return NULL;
    }
    if ((views == Py_None) != (hit_log == Py_None) ||
        (views != Py_None && (!PyDict_CheckExact(views) || !PyList_CheckExact(hit_log)))) {
        PyErr_SetString(PyExc_TypeError,
                        "publish_cache(views: dict, hit_log: list) or publish_cache(None, None)");
        return NULL;
    }
    AnswersObject *answers = (AnswersObject *)self;
    Py_INCREF(views);
    Py_XSETREF(answers->cached, views);
    Py_INCREF(hit_log);
    Py_XSETREF(answers->hit_log, hit_log);
    Py_RETURN_NONE;
}

static PyMethodDef answers_methods[] = {
    {"publish", answers_publish, METH_VARARGS, answers_publish_doc},
    {"publish_cache", answers_publish_cache, METH_VARARGS, answers_publish_cache_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef answers_members[] = {
    {"records", T_OBJECT, offsetof(AnswersObject, records), READONLY, NULL},
    {"memo", T_OBJECT, offsetof(AnswersObject, memo), READONLY, NULL},
    {"opt", T_OBJECT, offsetof(AnswersObject, opt), READONLY, NULL},
    {"opt_do", T_OBJECT, offsetof(AnswersObject, opt_do), READONLY, NULL},
    {"max_udp_size", T_PYSSIZET, offsetof(AnswersObject, max_udp_size), READONLY, NULL},
    {"cached", T_OBJECT, offsetof(AnswersObject, cached), READONLY, NULL},
    {"hit_log", T_OBJECT, offsetof(AnswersObject, hit_log), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject AnswersType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kdns.serve._fastpath.Answers",
    .tp_doc = PyDoc_STR("What the C loop serves hits from: records, memo, OPTs, size ceiling."),
    .tp_basicsize = sizeof(AnswersObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = answers_init,
    .tp_dealloc = answers_dealloc,
    .tp_methods = answers_methods,
    .tp_members = answers_members,
};

/* --- a resolver-cache entry, as C serves it (kdns/resolver/cache.py ``Cache.views``) -------- */

typedef struct {
    PyObject_HEAD
    PyObject *entry;      /* the cache's Entry: Python finds its bookkeeping through it */
    PyObject *heads;      /* tuple of the eight header variants (Entry.heads) */
    PyObject *tail;       /* bytes: everything after the question, TTLs as stored */
    Py_ssize_t *offsets;  /* where each TTL starts in ``tail`` */
    Py_ssize_t n_offsets;
    double stored_at;     /* Entry.stored_at, on time.monotonic's clock */
    long ttl;             /* Entry.ttl */
    /* Hits served here since the last take(), and their two latest times (monotonic s). */
    unsigned long long hits;
    double last_ask;
    double previous_ask;
    int queued; /* in the hit log since the last take() */
} CacheViewObject;

static PyTypeObject CacheViewType;

static int
view_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"entry", "heads", "tail", "offsets", "stored_at", "ttl", NULL};
    CacheViewObject *view = (CacheViewObject *)self;
    PyObject *entry, *heads, *tail, *offsets;
    double stored_at;
    long ttl;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!SO!dl:CacheView", kwlist, &entry,
                                     &PyTuple_Type, &heads, &tail, &PyTuple_Type, &offsets,
                                     &stored_at, &ttl)) {
        return -1;
    }
    if (view->entry != NULL) {
        PyErr_SetString(PyExc_TypeError, "CacheView: already initialised");
        return -1;
    }
    if (!PyBytes_CheckExact(tail) || PyTuple_GET_SIZE(heads) != 8) {
        PyErr_SetString(PyExc_TypeError, "CacheView: heads is 8 bytes, tail is bytes");
        return -1;
    }
    for (Py_ssize_t i = 0; i < 8; i++) {
        if (!PyBytes_CheckExact(PyTuple_GET_ITEM(heads, i))) {
            PyErr_SetString(PyExc_TypeError, "CacheView: heads is 8 bytes");
            return -1;
        }
    }
    Py_ssize_t count = PyTuple_GET_SIZE(offsets);
    Py_ssize_t *table = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(count ? count : 1));
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t offset = PyLong_AsSsize_t(PyTuple_GET_ITEM(offsets, i));
        if (offset == -1 && PyErr_Occurred()) {
            PyMem_Free(table);
            return -1;
        }
        if (offset < 0 || offset + 4 > PyBytes_GET_SIZE(tail)) {
            PyMem_Free(table);
            PyErr_SetString(PyExc_ValueError, "CacheView: a TTL offset outside the tail");
            return -1;
        }
        table[i] = offset;
    }
    Py_INCREF(entry);
    view->entry = entry;
    Py_INCREF(heads);
    view->heads = heads;
    Py_INCREF(tail);
    view->tail = tail;
    view->offsets = table;
    view->n_offsets = count;
    view->stored_at = stored_at;
    view->ttl = ttl;
    view->hits = 0;
    view->last_ask = -Py_HUGE_VAL;
    view->previous_ask = -Py_HUGE_VAL;
    view->queued = 0;
    return 0;
}

static void
view_dealloc(PyObject *self)
{
    CacheViewObject *view = (CacheViewObject *)self;
    Py_CLEAR(view->entry);
    Py_CLEAR(view->heads);
    Py_CLEAR(view->tail);
    PyMem_Free(view->offsets);
    view->offsets = NULL;
    Py_TYPE(self)->tp_free(self);
}

PyDoc_STRVAR(view_take_doc,
"take()\n--\n\n"
"(hits, last_ask, previous_ask) served here since the last take(), and start counting again.");

static PyObject *
view_take(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    CacheViewObject *view = (CacheViewObject *)self;
    PyObject *taken = Py_BuildValue("(Kdd)", view->hits, view->last_ask, view->previous_ask);
    if (taken != NULL) {
        view->hits = 0;
        view->last_ask = -Py_HUGE_VAL;
        view->previous_ask = -Py_HUGE_VAL;
        view->queued = 0;
    }
    return taken;
}

static PyMethodDef view_methods[] = {
    {"take", view_take, METH_NOARGS, view_take_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef view_members[] = {
    {"entry", T_OBJECT, offsetof(CacheViewObject, entry), READONLY, NULL},
    {"stored_at", T_DOUBLE, offsetof(CacheViewObject, stored_at), READONLY, NULL},
    {"ttl", T_LONG, offsetof(CacheViewObject, ttl), READONLY, NULL},
    {"hits", T_ULONGLONG, offsetof(CacheViewObject, hits), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CacheViewType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kdns.serve._fastpath.CacheView",
    .tp_doc = PyDoc_STR("One fresh resolver-cache entry as the C loop serves it."),
    .tp_basicsize = sizeof(CacheViewObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = view_init,
    .tp_dealloc = view_dealloc,
    .tp_methods = view_methods,
    .tp_members = view_members,
};

/* One hit served from ``view`` at ``now``: counted, and the view logged on its first. */
static void
view_hit(CacheViewObject *view, PyObject *hit_log, double now)
{
    view->hits++;
    view->previous_ask = view->last_ask;
    view->last_ask = now;
    if (!view->queued && hit_log != NULL && PyList_CheckExact(hit_log)) {
        if (PyList_Append(hit_log, (PyObject *)view) == 0) {
            view->queued = 1;
        }
        else {
            PyErr_Clear(); /* out of memory: the hit goes uncounted until the next one */
        }
    }
}

typedef struct {
    PyObject_HEAD
    unsigned long long cells[C_CELLS];
    /* Set (under the GIL) while the query log is on: serve() returns before its next receive
     * and the Python loop serves instead. Read without the GIL: a plain flag. */
    volatile int divert;
    /* Set by stop() (UDPServer.stop, before it shuts the socket down to wake the receive). */
    volatile int stopping;
    unsigned long long answered; /* replies built here, without calling Python */
    PyObject *answers;
    PyObject *fallback;
    PyObject *deferred_sender;
    PyObject *on_error;
    int with_peer; /* fallback(packet, peer) rather than fallback(packet) */
} LoopObject;

static PyTypeObject LoopType;

static int
loop_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"answers", "fallback", "deferred_sender", "on_error", "with_peer",
                             NULL};
    LoopObject *loop = (LoopObject *)self;
    PyObject *answers, *fallback, *deferred_sender, *on_error;
    int with_peer = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OOO|p:Loop", kwlist, &AnswersType,
                                     &answers, &fallback, &deferred_sender, &on_error,
                                     &with_peer)) {
        return -1;
    }
    loop->with_peer = with_peer;
    if (!PyCallable_Check(fallback) || !PyCallable_Check(deferred_sender) ||
        !PyCallable_Check(on_error)) {
        PyErr_SetString(PyExc_TypeError, "fallback, deferred_sender and on_error are callables");
        return -1;
    }
    Py_INCREF(answers);
    Py_XSETREF(loop->answers, answers);
    Py_INCREF(fallback);
    Py_XSETREF(loop->fallback, fallback);
    Py_INCREF(deferred_sender);
    Py_XSETREF(loop->deferred_sender, deferred_sender);
    Py_INCREF(on_error);
    Py_XSETREF(loop->on_error, on_error);
    return 0;
}

static int
loop_traverse(PyObject *self, visitproc visit, void *arg)
{
    LoopObject *loop = (LoopObject *)self;
    Py_VISIT(loop->answers);
    Py_VISIT(loop->fallback);
    Py_VISIT(loop->deferred_sender);
    Py_VISIT(loop->on_error);
    return 0;
}

static int
loop_clear(PyObject *self)
{
    LoopObject *loop = (LoopObject *)self;
    Py_CLEAR(loop->answers);
    Py_CLEAR(loop->fallback);
    Py_CLEAR(loop->deferred_sender);
    Py_CLEAR(loop->on_error);
    return 0;
}

static void
loop_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    (void)loop_clear(self);
    Py_TYPE(self)->tp_free(self);
}

PyDoc_STRVAR(loop_read_doc,
"read()\n--\n\n"
"A copy of the cells, as a list of ints (the layout of kdns.serve.tally).");

static PyObject *
loop_read(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    LoopObject *loop = (LoopObject *)self;
    PyObject *list = PyList_New(C_CELLS);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < C_CELLS; i++) {
        PyObject *value = PyLong_FromUnsignedLongLong(loop->cells[i]);
        if (value == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, value);
    }
    return list;
}

PyDoc_STRVAR(loop_set_divert_doc,
"set_divert(flag)\n--\n\n"
"While true, serve() returns before its next receive (the Python loop serves then).");

static PyObject *
loop_set_divert(PyObject *self, PyObject *flag)
{
    int truth = PyObject_IsTrue(flag);
    if (truth < 0) {
        return NULL;
    }
    ((LoopObject *)self)->divert = truth;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(loop_stop_doc,
"stop()\n--\n\n"
"serve() returns after its current (or next) receive returns.");

static PyObject *
loop_stop(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    ((LoopObject *)self)->stopping = 1;
    Py_RETURN_NONE;
}

static PyMethodDef loop_methods[] = {
    {"read", loop_read, METH_NOARGS, loop_read_doc},
    {"set_divert", loop_set_divert, METH_O, loop_set_divert_doc},
    {"stop", loop_stop, METH_NOARGS, loop_stop_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef loop_members[] = {
    {"answered", T_ULONGLONG, offsetof(LoopObject, answered), READONLY,
     "Replies built by the C loop without calling Python."},
    {"stopping", T_INT, offsetof(LoopObject, stopping), READONLY, NULL},
    {"answers", T_OBJECT, offsetof(LoopObject, answers), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject LoopType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kdns.serve._fastpath.Loop",
    .tp_doc = PyDoc_STR("One C serving loop's contract: answers, handlers, flags and counts."),
    .tp_basicsize = sizeof(LoopObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = loop_init,
    .tp_traverse = loop_traverse,
    .tp_clear = loop_clear,
    .tp_dealloc = loop_dealloc,
    .tp_methods = loop_methods,
    .tp_members = loop_members,
};

static PyObject *logger; /* logging.getLogger("kdns.serve.accel"), made on first use */

/* --- a hit ------------------------------------------------------------------------------------ */

/* The pieces of one hit's reply; ``entry`` and ``opt`` are strong references that keep the
 * borrowed pointers below alive. */
typedef struct {
    PyObject *entry;
    PyObject *opt;
    const char *head;
    Py_ssize_t head_len;
    const char *body;
    Py_ssize_t body_len;
    const char *opt_bytes;
    Py_ssize_t opt_len;
    Py_ssize_t qend;
    Py_ssize_t total;
    CacheViewObject *view;      /* a cache hit: ``entry`` is this view */
    const Py_ssize_t *ttl_offsets; /* TTLs to set to ``ttl``, as offsets into ``body`` */
    Py_ssize_t n_ttl;
    unsigned long ttl;
} Plan;

static void
plan_release(Plan *plan)
{
    Py_CLEAR(plan->entry);
    Py_CLEAR(plan->opt);
}

/* hotpath.assemble: packet[:2] + head + packet[12:qend] + body + opt, into ``out``. */
static void
plan_write(const Plan *plan, const unsigned char *packet, unsigned char *out)
{
    unsigned char *at = out;
    memcpy(at, packet, 2);
    at += 2;
    memcpy(at, plan->head, (size_t)plan->head_len);
    at += plan->head_len;
    memcpy(at, packet + HEADER_SIZE, (size_t)(plan->qend - HEADER_SIZE));
    at += plan->qend - HEADER_SIZE;
    memcpy(at, plan->body, (size_t)plan->body_len);
    for (Py_ssize_t i = 0; i < plan->n_ttl; i++) { /* message.patch: every TTL the same */
        unsigned char *ttl = at + plan->ttl_offsets[i];
        ttl[0] = (unsigned char)(plan->ttl >> 24);
        ttl[1] = (unsigned char)(plan->ttl >> 16);
        ttl[2] = (unsigned char)(plan->ttl >> 8);
        ttl[3] = (unsigned char)plan->ttl;
    }
    at += plan->body_len;
    if (plan->opt_len) {
        memcpy(at, plan->opt_bytes, (size_t)plan->opt_len);
    }
}

/* heads[index] when ``heads`` is an exact tuple holding exact bytes there; else NULL. */
static PyObject *
head_at(PyObject *heads, Py_ssize_t index)
{
    if (!PyTuple_CheckExact(heads) || PyTuple_GET_SIZE(heads) <= index) {
        return NULL;
    }
    PyObject *head = PyTuple_GET_ITEM(heads, index);
    return PyBytes_CheckExact(head) ? head : NULL;
}

/* ``mapping[key]`` as a strong reference when ``mapping`` is a dict holding it; else NULL
 * (no exception left set). */
static PyObject *
dict_get(PyObject *mapping, PyObject *key)
{
    PyObject *found = NULL;
    if (mapping == NULL || !PyDict_CheckExact(mapping)) {
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030D0000
    (void)PyDict_GetItemRef(mapping, key, &found); /* a strong reference, also without a GIL */
#else
    found = PyDict_GetItemWithError(mapping, key); /* borrowed: hold it */
    Py_XINCREF(found);
#endif
    if (PyErr_Occurred()) {
        PyErr_Clear(); /* the Python path meets the same error and handles it */
    }
    return found;
}

/* Fill ``plan`` for a query ``Responder.answer`` answers from ``records`` or the memo: 1.
 * Else 0, and the caller must use the fallback. Never leaves an exception set. */
static int
plan_reply(AnswersObject *answers, const unsigned char *packet, Py_ssize_t n, int tcp,
           Plan *plan)
{
    memset(plan, 0, sizeof(*plan));
    if (answers->records == Py_None) {
        return 0; /* no table: the fallback answers SERVFAIL */
    }
    int variant = 0;
    Py_ssize_t qend = hp_shape(packet, n, &variant);
    if (qend == 0) {
        return 0;
    }
    PyObject *key = hp_key(packet, qend);
    if (key == NULL) {
        PyErr_Clear();
        return 0;
    }
    PyObject *entry = dict_get(answers->records, key);
    if (entry == NULL) {
        entry = dict_get(answers->memo, key);
    }
    Py_DECREF(key);
    if (entry == NULL) {
        return 0;
    }
    plan->entry = entry;
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) < 2) {
        goto miss; /* None in the memo: not ours (REFUSED or forwarded) */
    }
    PyObject *heads = PyTuple_GET_ITEM(entry, 0);
    PyObject *body = PyTuple_GET_ITEM(entry, 1);
    if (PyTuple_CheckExact(body) && PyTuple_GET_SIZE(body) > 0) {
        /* loadbalance: one body per rotation, chosen by the query ID (wire.pick_body) */
        body = PyTuple_GET_ITEM(body, ((packet[0] << 8) | packet[1]) % PyTuple_GET_SIZE(body));
    }
    if (!PyBytes_CheckExact(body)) {
        goto miss;
    }
    PyObject *head = head_at(heads, variant & V_HEADS);
    if (head == NULL) {
        goto miss;
    }
    plan->total = 2 + PyBytes_GET_SIZE(head) + (qend - HEADER_SIZE) + PyBytes_GET_SIZE(body);
    if (variant & V_EDNS) {
        PyObject *opt = (variant & V_DO) ? answers->opt_do : answers->opt;
        Py_INCREF(opt);
        plan->opt = opt;
        plan->opt_bytes = PyBytes_AS_STRING(opt);
        plan->opt_len = PyBytes_GET_SIZE(opt);
        plan->total += plan->opt_len;
    }
    if (!tcp && plan->total > hp_udp_limit(packet, qend, variant, answers->max_udp_size)) {
        goto miss; /* truncation: the slow path */
    }
    plan->head = PyBytes_AS_STRING(head);
    plan->head_len = PyBytes_GET_SIZE(head);
    plan->body = PyBytes_AS_STRING(body);
    plan->body_len = PyBytes_GET_SIZE(body);
    plan->qend = qend;
    return 1;
miss:
    plan_release(plan);
    return 0;
}

/* Fill ``plan`` for a fresh hit in the resolver cache's views at ``now`` (monotonic seconds):
 * nodecache's shortcut (nodecache/handler.py ``_cached``, ``Hit.reply``): the query's ID, the
 * entry's header variant, the client's question, the records with every TTL set to the
 * seconds left, and the server's OPT. 1, else 0 (the fallback: a miss, an expired or stale
 * entry, truncation). Never leaves an exception set. */
static int
plan_cached(AnswersObject *answers, const unsigned char *packet, Py_ssize_t n, int tcp,
            double now, Plan *plan)
{
    memset(plan, 0, sizeof(*plan));
    if (answers->cached == NULL || answers->cached == Py_None) {
        return 0;
    }
    int variant = 0;
    Py_ssize_t qend = hp_shape(packet, n, &variant);
    if (qend == 0) {
        return 0;
    }
    /* The view key: the question key and one byte DO << 1 | CD (the cache's Key). */
    Py_ssize_t key_len = qend - HEADER_SIZE;
    PyObject *key = PyBytes_FromStringAndSize(NULL, key_len + 1);
    if (key == NULL) {
        PyErr_Clear();
        return 0;
    }
    unsigned char *k = (unsigned char *)PyBytes_AS_STRING(key);
    for (Py_ssize_t i = 0; i < key_len - 4; i++) {
        unsigned char c = packet[HEADER_SIZE + i];
        k[i] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
    }
    memcpy(k + key_len - 4, packet + qend - 4, 4);
    k[key_len] = (unsigned char)(((variant & V_DO) ? 2 : 0) | ((variant & 2) ? 1 : 0));
    PyObject *found = dict_get(answers->cached, key);
    Py_DECREF(key);
    if (found == NULL) {
        return 0;
    }
    plan->entry = found;
    if (Py_TYPE(found) != &CacheViewType || ((CacheViewObject *)found)->heads == NULL) {
        goto miss; /* not a view, or one made without __init__ */
    }
    CacheViewObject *view = (CacheViewObject *)found;
    long remaining = view->ttl - (long)(now - view->stored_at); /* Entry.remaining */
    if (remaining <= 0) {
        goto miss;
    }
    PyObject *head = PyTuple_GET_ITEM(view->heads, variant & V_HEADS);
    plan->total = 2 + PyBytes_GET_SIZE(head) + (qend - HEADER_SIZE) + PyBytes_GET_SIZE(view->tail);
    if (variant & V_EDNS) {
        PyObject *opt = (variant & V_DO) ? answers->opt_do : answers->opt;
        Py_INCREF(opt);
        plan->opt = opt;
        plan->opt_bytes = PyBytes_AS_STRING(opt);
        plan->opt_len = PyBytes_GET_SIZE(opt);
        plan->total += plan->opt_len;
    }
    if (!tcp && plan->total > hp_udp_limit(packet, qend, variant, answers->max_udp_size)) {
        goto miss; /* truncation: the slow path */
    }
    plan->head = PyBytes_AS_STRING(head);
    plan->head_len = PyBytes_GET_SIZE(head);
    plan->body = PyBytes_AS_STRING(view->tail);
    plan->body_len = PyBytes_GET_SIZE(view->tail);
    plan->qend = qend;
    plan->view = view;
    plan->ttl_offsets = view->offsets;
    plan->n_ttl = view->n_offsets;
    plan->ttl = (unsigned long)remaining;
    return 1;
miss:
    plan_release(plan);
    return 0;
}

/* A hit planned by plan_reply or plan_cached, now sent: a cache hit is counted in its view. */
static void
plan_served(const Plan *plan, AnswersObject *answers, double now)
{
    if (plan->view != NULL) {
        view_hit(plan->view, answers->hit_log, now);
    }
}

/* --- module functions: the twins and answer() ------------------------------------------------ */

PyDoc_STRVAR(fast_key_doc,
"fast_key(packet)\n--\n\n"
"kdns.dns.hotpath.fast_key, in C: (key, qend, variant) or None.");

static PyObject *
fastpath_fast_key(PyObject *Py_UNUSED(module), PyObject *packet)
{
    if (!PyBytes_Check(packet)) {
        PyErr_SetString(PyExc_TypeError, "fast_key(packet: bytes)");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(packet);
    int variant = 0;
    Py_ssize_t qend = hp_shape(p, PyBytes_GET_SIZE(packet), &variant);
    if (qend == 0) {
        Py_RETURN_NONE;
    }
    PyObject *key = hp_key(p, qend);
    if (key == NULL) {
        return NULL;
    }
    return Py_BuildValue("(Nni)", key, qend, variant);
}

PyDoc_STRVAR(udp_limit_doc,
"udp_limit(packet, qend, variant, max_udp_size)\n--\n\n"
"kdns.dns.hotpath.udp_limit, in C (for a packet fast_key accepted).");

static PyObject *
fastpath_udp_limit(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer packet;
    Py_ssize_t qend, max_udp_size;
    int variant;
    if (!PyArg_ParseTuple(args, "y*nin:udp_limit", &packet, &qend, &variant, &max_udp_size)) {
        return NULL;
    }
    if ((variant & V_EDNS) && (qend < 0 || qend + 5 > packet.len)) {
        PyBuffer_Release(&packet);
        PyErr_SetString(PyExc_IndexError, "udp_limit: no OPT at qend");
        return NULL;
    }
    Py_ssize_t limit = hp_udp_limit(packet.buf, qend, variant, max_udp_size);
    PyBuffer_Release(&packet);
    return PyLong_FromSsize_t(limit);
}

PyDoc_STRVAR(assemble_doc,
"assemble(packet, qend, variant, heads, body, opts)\n--\n\n"
"kdns.dns.hotpath.assemble, in C, through the writer the C loop uses.");

static PyObject *
fastpath_assemble(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *packet, *heads, *body, *opts;
    Py_ssize_t qend;
    int variant;
    if (!PyArg_ParseTuple(args, "SniOSO!:assemble", &packet, &qend, &variant, &heads, &body,
                          &PyTuple_Type, &opts)) {
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(packet);
    PyObject *head = head_at(heads, variant & V_HEADS);
    PyObject *opt = NULL;
    if (variant & V_EDNS) {
        opt = PyTuple_GET_SIZE(opts) == 2 ? PyTuple_GET_ITEM(opts, (variant & V_DO) ? 1 : 0)
                                          : NULL;
        if (opt == NULL || !PyBytes_CheckExact(opt)) {
            PyErr_SetString(PyExc_TypeError, "assemble: opts is (bytes, bytes)");
            return NULL;
        }
    }
    if (head == NULL || qend < HEADER_SIZE || qend > n) {
        PyErr_SetString(PyExc_ValueError, "assemble: no such header variant or question end");
        return NULL;
    }
    Plan plan = {
        .head = PyBytes_AS_STRING(head),
        .head_len = PyBytes_GET_SIZE(head),
        .body = PyBytes_AS_STRING(body),
        .body_len = PyBytes_GET_SIZE(body),
        .opt_bytes = opt ? PyBytes_AS_STRING(opt) : NULL,
        .opt_len = opt ? PyBytes_GET_SIZE(opt) : 0,
        .qend = qend,
    };
    plan.total = 2 + plan.head_len + (qend - HEADER_SIZE) + plan.body_len + plan.opt_len;
    PyObject *reply = PyBytes_FromStringAndSize(NULL, plan.total);
    if (reply != NULL) {
        plan_write(&plan, (const unsigned char *)PyBytes_AS_STRING(packet),
                   (unsigned char *)PyBytes_AS_STRING(reply));
    }
    return reply;
}

PyDoc_STRVAR(answer_doc,
"answer(answers, fallback, packet, tcp=False)\n--\n\n"
"The reply to one query, byte-identical to ``fallback(packet, tcp)`` (Responder.answer, or\n"
"nodecache's handler): a hit in ``answers`` (records, memo, or a fresh cache view, counted in\n"
"it) is answered here; everything else is ``fallback(packet, tcp)``.");

static PyObject *
fastpath_answer(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"answers", "fallback", "packet", "tcp", NULL};
    PyObject *answers, *fallback, *packet, *tcp_obj = Py_False;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OO|O:answer", kwlist, &AnswersType,
                                     &answers, &fallback, &packet, &tcp_obj)) {
        return NULL;
    }
    if (PyBytes_CheckExact(packet)) {
        int tcp = PyObject_IsTrue(tcp_obj);
        if (tcp < 0) {
            PyErr_Clear();
        }
        else {
            Plan plan;
            const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(packet);
            Py_ssize_t n = PyBytes_GET_SIZE(packet);
            double now = (double)monotonic_ns() / 1e9;
            if (plan_reply((AnswersObject *)answers, data, n, tcp, &plan) ||
                plan_cached((AnswersObject *)answers, data, n, tcp, now, &plan)) {
                PyObject *reply = PyBytes_FromStringAndSize(NULL, plan.total);
                if (reply != NULL) {
                    plan_write(&plan, data, (unsigned char *)PyBytes_AS_STRING(reply));
                    plan_served(&plan, (AnswersObject *)answers, now);
                }
                else {
                    PyErr_Clear();
                }
                plan_release(&plan);
                if (reply != NULL) {
                    return reply;
                }
            }
        }
    }
    return PyObject_CallFunctionObjArgs(fallback, packet, tcp_obj, NULL);
}

/* --- serve() --------------------------------------------------------------------------------- */


/* The current exception, normalized, with its traceback attached; clears it. */
static PyObject *
take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    return value;
#endif
}

/* Make ``exc`` (stolen) the current exception again. */
static void
restore_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyObject *type = (PyObject *)Py_TYPE(exc);
    Py_INCREF(type);
    PyErr_Restore(type, exc, PyException_GetTraceback(exc));
#endif
}

/* Log the current exception (an Exception, not a BaseException like KeyboardInterrupt) and
 * count it through ``on_error()`` (the Responder's ``count_error``), as the Python path counts
 * its own; clears it. */
static void
report_error(PyObject *on_error, const char *what)
{
    PyObject *exc = take_exception();
    if (on_error != NULL && on_error != Py_None) {
        PyObject *counted = PyObject_CallNoArgs(on_error);
        Py_XDECREF(counted);
    }
    PyErr_Clear();
    if (exc == NULL) {
        return;
    }

    if (logger == NULL) {
        PyObject *logging = PyImport_ImportModule("logging");
        if (logging != NULL) {
            PyObject *made = PyObject_CallMethod(logging, "getLogger", "s", "kdns.serve.accel");
            Py_DECREF(logging);
            if (logger == NULL) { /* another serving thread may have got here first */
                logger = made;
            }
            else {
                Py_XDECREF(made);
            }
        }
    }
    PyObject *result = NULL;
    if (logger != NULL) {
        PyObject *method = PyObject_GetAttrString(logger, "error");
        PyObject *call_args = Py_BuildValue(
            "(ss)", "internal error in the UDP accelerator (%s); packet dropped", what);
        PyObject *call_kwargs = Py_BuildValue("{s:O}", "exc_info", exc);
        if (method != NULL && call_args != NULL && call_kwargs != NULL) {
            result = PyObject_Call(method, call_args, call_kwargs);
        }
        Py_XDECREF(call_kwargs);
        Py_XDECREF(call_args);
        Py_XDECREF(method);
    }
    if (result == NULL) {
        /* Logging itself failed: hand the original error to sys.unraisablehook. */
        PyErr_Clear();
        restore_exception(exc);
        PyErr_WriteUnraisable(on_error);
        return;
    }
    Py_DECREF(result);
    Py_DECREF(exc);
}

/* Send one datagram; called without the GIL. Errors are dropped, as the Python loop does. */
static void
send_datagram(int fd, const unsigned char *data, size_t len, const struct sockaddr *peer,
              socklen_t peer_len)
{
    for (int attempt = 0; attempt < 8; attempt++) {
        if (sendto(fd, data, len, 0, peer, peer_len) >= 0) {
            return;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            /* A non-blocking socket (one with a Python timeout): wait for room, briefly. */
            struct pollfd pfd = {.fd = fd, .events = POLLOUT, .revents = 0};
            if (poll(&pfd, 1, SEND_POLL_MS) > 0) {
                continue;
            }
        }
        return;
    }
}

/* True for an exception that must end the loop, as it would end the Python loop: anything
 * that is not an Exception (KeyboardInterrupt, SystemExit from a signal handler). */
static int
fatal_exception(void)
{
    return !PyErr_ExceptionMatches(PyExc_Exception);
}

/* The peer as Python's socket.recvfrom gives it: (host, port) for IPv4, (host, port, flowinfo,
 * scope_id) for IPv6. A new reference, or NULL with an exception. */
static PyObject *
peer_address(const struct sockaddr_storage *peer)
{
    char host[INET6_ADDRSTRLEN];
    if (peer->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)peer;
        if (inet_ntop(AF_INET, &v4->sin_addr, host, sizeof(host)) != NULL) {
            return Py_BuildValue("(si)", host, (int)ntohs(v4->sin_port));
        }
    }
    else if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)peer;
        if (inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host)) != NULL) {
            return Py_BuildValue("(siII)", host, (int)ntohs(v6->sin6_port),
                                 (unsigned int)ntohl(v6->sin6_flowinfo),
                                 (unsigned int)v6->sin6_scope_id);
        }
    }
    else {
        errno = EAFNOSUPPORT;
    }
    return PyErr_SetFromErrno(PyExc_OSError);
}

/* The Python path for one query, as the Python loop runs it: ``responder.answer(packet)``;
 * bytes are counted (when ``cells``) and copied to ``out`` (or sent at once when larger than
 * SEND_CAPACITY), None drops the query, and anything else is a Deferred (kdns/serve/reply.py),
 * called with ``server.deferred_sender(peer, packet, started_ns)``. Returns the length to send
 * from ``out``, 0 for nothing, -1 for a fatal exception (set). */
static Py_ssize_t
python_reply(LoopObject *loop, const unsigned char *packet, Py_ssize_t n,
             unsigned char *out, int fd, const struct sockaddr_storage *peer, socklen_t peer_len,
             unsigned long long *cells, long long started_ns)
{
    PyObject *query = PyBytes_FromStringAndSize((const char *)packet, n);
    if (query == NULL) {
        report_error(loop->on_error, "copying a query");
        return 0;
    }
    PyObject *reply;
    if (loop->with_peer) {
        PyObject *address = peer_address(peer);
        reply = address ? PyObject_CallFunctionObjArgs(loop->fallback, query, address, NULL)
                        : NULL;
        Py_XDECREF(address);
    }
    else {
        reply = PyObject_CallOneArg(loop->fallback, query);
    }
    Py_DECREF(query);
    if (reply == NULL) {
        if (fatal_exception()) {
            return -1;
        }
        report_error(loop->on_error, "the fallback raised");
        return 0;
    }
    Py_ssize_t length = 0;
    if (PyBytes_Check(reply)) {
        Py_ssize_t size = PyBytes_GET_SIZE(reply);
        if (cells != NULL) {
            count_reply(cells, packet, n, (const unsigned char *)PyBytes_AS_STRING(reply), size,
                        peer_family(peer), 0, monotonic_ns() - started_ns);
        }
        if (size <= SEND_CAPACITY) {
            memcpy(out, PyBytes_AS_STRING(reply), (size_t)size);
            length = size;
        }
        else {
            Py_BEGIN_ALLOW_THREADS
            send_datagram(fd, (const unsigned char *)PyBytes_AS_STRING(reply), (size_t)size,
                          (const struct sockaddr *)peer, peer_len);
            Py_END_ALLOW_THREADS
        }
    }
    else if (reply != Py_None) {
        PyObject *address = peer_address(peer);
        PyObject *query = address ? PyBytes_FromStringAndSize((const char *)packet, n) : NULL;
        PyObject *started = query ? PyLong_FromLongLong(started_ns) : NULL;
        PyObject *send = started ? PyObject_CallFunctionObjArgs(loop->deferred_sender, address,
                                                                query, started, NULL)
                                 : NULL;
        PyObject *done = send ? PyObject_CallOneArg(reply, send) : NULL;
        Py_XDECREF(send);
        Py_XDECREF(started);
        Py_XDECREF(query);
        Py_XDECREF(address);
        if (done != NULL) {
            Py_DECREF(done);
        }
        else if (fatal_exception()) {
            length = -1;
        }
        else {
            report_error(loop->on_error, "handing a deferred reply its send function");
        }
    }
    Py_DECREF(reply);
    return length;
}


PyDoc_STRVAR(serve_doc,
"serve(sock_fd, loop)\n--\n\n"
"Serve the bound UDP socket ``sock_fd`` until ``loop.stop()`` was called and a receive\n"
"returns. Hits come from ``loop.answers``; other replies are ``loop.fallback(packet)``'s;\n"
"a Deferred reply is called with ``loop.deferred_sender(peer, packet, started_ns)``, as\n"
"kdns.serve.udp does. Every other reply sent is counted in the loop's cells; while its divert\n"
"flag is set, serve returns: None before its next receive, or (packet, peer) when it was set\n"
"while serve waited (the caller answers that datagram). Errors answering a packet are logged\n"
"and counted through ``loop.on_error()``; KeyboardInterrupt and SystemExit (from a signal\n"
"handler) propagate, as from the Python loop; OSError is raised if the descriptor is no\n"
"longer a usable socket.");

static PyObject *
fastpath_serve(PyObject *Py_UNUSED(module), PyObject *args)
{
    int fd;
    PyObject *loop_obj;
    if (!PyArg_ParseTuple(args, "iO!:serve", &fd, &LoopType, &loop_obj)) {
        return NULL;
    }
    LoopObject *loop = (LoopObject *)loop_obj;
    if (loop->answers == NULL || loop->fallback == NULL) {
        PyErr_SetString(PyExc_ValueError, "serve: the Loop was not initialised");
        return NULL;
    }
    unsigned long long *cells = loop->cells;
    volatile int *divert = &loop->divert;
    unsigned char *in = PyMem_RawMalloc(RECEIVE_SIZE);
    unsigned char *out = PyMem_RawMalloc(SEND_CAPACITY);
    if (in == NULL || out == NULL) {
        PyMem_RawFree(in);
        PyMem_RawFree(out);
        return PyErr_NoMemory();
    }
    struct sockaddr_storage peer;
    socklen_t peer_len = 0;
    Py_ssize_t pending = 0; /* bytes of ``out`` to send to ``peer`` before the next receive */
    PyObject *result = NULL;
    Py_INCREF(loop_obj); /* the cells and handlers must outlive the loop */

    for (;;) {
        ssize_t n = -1;
        int error = 0;
        int diverted = 0;
        long long started_ns = 0;
        Py_BEGIN_ALLOW_THREADS
        if (pending > 0) {
            send_datagram(fd, out, (size_t)pending, (struct sockaddr *)&peer, peer_len);
        }
        if (*divert) {
            diverted = 1;
        }
        else {
            peer_len = sizeof(peer);
            n = recvfrom(fd, in, RECEIVE_SIZE, 0, (struct sockaddr *)&peer, &peer_len);
            started_ns = monotonic_ns();
            if (n < 0) {
                error = errno;
                if (error == EAGAIN || error == EWOULDBLOCK) {
                    /* A non-blocking socket: wait here (shutdown wakes the poll too). */
                    struct pollfd pfd = {.fd = fd, .events = POLLIN, .revents = 0};
                    if (poll(&pfd, 1, -1) < 0) {
                        error = errno;
                    }
                }
            }
        }
        Py_END_ALLOW_THREADS
        pending = 0;
        if (diverted) {
            result = Py_None; /* the Python loop takes over (kdns.serve.udp) */
            break;
        }

        if (loop->stopping) {
            result = Py_None;
            break;
        }
        if (n < 0) {
            if (error == EINTR) {
                if (PyErr_CheckSignals() < 0) {
                    break; /* a signal handler raised: end the loop with its exception */
                }
            }
            else if (error == EBADF || error == ENOTSOCK || error == EINVAL || error == EFAULT) {
                errno = error;
                PyErr_SetFromErrno(PyExc_OSError); /* the socket is gone: spinning helps no one */
                break;
            }
            continue; /* ECONNREFUSED, ENOBUFS, EAGAIN...: as the Python loop, go on */
        }
        if (*divert) {
            /* Switched while we waited: this datagram is the Python loop's first. */
            PyObject *address = peer_address(&peer);
            if (address != NULL) {
                result = Py_BuildValue("(y#N)", (const char *)in, (Py_ssize_t)n, address);
            }
            break; /* NULL with an exception: raised to the caller */
        }

        Plan plan;
        AnswersObject *answers = (AnswersObject *)loop->answers;
        double now = (double)started_ns / 1e9;
        if (plan_reply(answers, in, n, 0, &plan) || plan_cached(answers, in, n, 0, now, &plan)) {
            if (plan.total <= SEND_CAPACITY) {
                plan_write(&plan, in, out);
                pending = plan.total;
                plan_served(&plan, answers, now);
                plan_release(&plan);
                loop->answered++;
                count_reply(cells, in, n, out, pending, peer_family(&peer), 0,
                            monotonic_ns() - started_ns);
                continue;
            }
            plan_release(&plan);
        }
        pending = python_reply(loop, in, n, out, fd, &peer, peer_len, cells, started_ns);
        if (pending < 0) {
            break;
        }
    }
    PyMem_RawFree(in);
    PyMem_RawFree(out);
    Py_DECREF(loop_obj);
    if (result == Py_None) {
        Py_INCREF(result);
    }
    return result; /* None, a (packet, peer) the Python loop must answer, or NULL */
}


/* --- module -------------------------------------------------------------------------------- */

static PyMethodDef fastpath_methods[] = {
    {"answer", (PyCFunction)(void (*)(void))fastpath_answer, METH_VARARGS | METH_KEYWORDS,
     answer_doc},
    {"serve", fastpath_serve, METH_VARARGS, serve_doc},
    {"fast_key", fastpath_fast_key, METH_O, fast_key_doc},
    {"udp_limit", fastpath_udp_limit, METH_VARARGS, udp_limit_doc},
    {"assemble", fastpath_assemble, METH_VARARGS, assemble_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "kdns.serve._fastpath",
    .m_doc = "The optional C accelerator of the UDP hot path: see kdns/serve/accel.py.",
    .m_size = -1,
    .m_methods = fastpath_methods,
};

/* Add ``type`` to ``module`` as ``name``: 0, or -1 with an exception. */
static int
add_type(PyObject *module, const char *name, PyTypeObject *type)
{
    Py_INCREF(type);
    if (PyModule_AddObject(module, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    if (PyType_Ready(&AnswersType) < 0 || PyType_Ready(&LoopType) < 0 ||
        PyType_Ready(&CacheViewType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&fastpath_module);
    if (module == NULL) {
        return NULL;
    }
    /* tally.LAYOUT: the dimensions and where each counter starts. */
    PyObject *layout = Py_BuildValue(
        "(iiiiiiiiiiiiii)", N_TYPES, N_FAMILIES, N_SIZES, N_DURATIONS, N_RCODES, N_PLUGINS,
        C_REQUESTS, C_DO_REQUESTS, C_REQUEST_SIZE, C_RESPONSE_SIZE, C_RESPONSES, C_DURATION,
        C_DURATION_SUM_NS, C_CELLS);
    if (layout == NULL || PyModule_AddObject(module, "LAYOUT", layout) < 0) {
        Py_XDECREF(layout);
        Py_DECREF(module);
        return NULL;
    }
    if (add_type(module, "Answers", &AnswersType) < 0 || add_type(module, "Loop", &LoopType) < 0 ||
        add_type(module, "CacheView", &CacheViewType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
