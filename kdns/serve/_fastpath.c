/*
 * kdns.serve._fastpath: the optional C accelerator of the UDP hot path.
 *
 * It does exactly what the records-dict hit of ``Responder.answer`` (kdns/serve/protocol.py)
 * does, and hands everything else to ``responder.answer`` itself, so replies are byte-identical
 * to the Python path for every input:
 *
 * - ``answer(responder, packet, tcp=False)``: one query in, the reply (or None) out.
 * - ``serve(sock_fd, responder, server, counters=None)``: the blocking recvfrom/sendto loop of
 *   ``kdns.serve.udp.UDPServer._run``: receive with the GIL released, look the question up in
 *   ``responder.table.records`` (read again for every packet: a publish swaps the table), build
 *   a hit's reply in a reusable C buffer and send it without creating a Python object; a miss
 *   goes to ``responder.answer(packet)``, whose reply is sent as kdns.serve.udp sends it (bytes
 *   at once; a Deferred is called with ``server.deferred_sender(peer, packet, started_ns)``).
 *   Returns when ``server._stopping`` is true after a receive returns (UDPServer.stop sets it,
 *   then shuts the socket down to wake the receive), or when the counters' divert flag is set
 *   (the query log went on): None, or the (packet, peer) just received, for the Python loop.
 * - ``Counters()``: the per-query counts of one serving loop, in the cells of
 *   kdns/serve/tally.py (``LAYOUT`` here must equal ``tally.LAYOUT``). ``serve`` counts every
 *   reply it sends itself (hits and the Python path's bytes) with ``count_reply``, the C twin of
 *   ``tally.count``; a Deferred reply is counted by ``deferred_sender``. Only the serving thread
 *   writes the cells, holding the GIL; ``read()`` copies them out under the GIL.
 *
 * The Python fast path, mirrored here step by step (the order of the checks does not matter:
 * none has a side effect):
 *   end = packet.find(b"\0", 12); a hit needs end > 0, table not None, packet[2] & 0xF8 == 0
 *   key = packet[12:end+1].lower() + packet[end+1:end+5]      (ASCII lower-casing only)
 *   entry = table.records.get(key)            -> (heads: 8 header variants, body)
 *   body is a tuple (loadbalance rotations): body = body[query ID % len(body)]
 *   flag_index = RD | CD << 1
 *   counts == QD only and len(packet) == end+5:
 *       reply = id + heads[flag_index] + question + body; sent if tcp or len <= 512
 *   counts == QD + AR, a whole OPT (owner root, type 41, version 0, rdlen ending the packet):
 *       reply = id + heads[4|flag_index] + question + body + (_opt_do if DO else _opt);
 *       sent if tcp or len <= min(max(client payload, 512), responder.max_udp_size)
 *   anything else: responder.answer(packet, tcp) (the table's memo, the slow path, errors).
 * A truncated question cannot hit (a table key is a whole name plus 4 bytes, and its only zero
 * byte ends the name), so this file requires the 4 type/class bytes before it builds a key.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

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
#define OPT_SIZE 11 /* root owner, type, class, ttl, rdlength */
#define SEND_POLL_MS 1000

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

typedef struct {
    PyObject_HEAD
    unsigned long long cells[C_CELLS];
    /* Set (under the GIL) while the query log is on: serve() returns before its next receive
     * and the Python loop serves instead. Read without the GIL: a plain flag. */
    volatile int divert;
} CountersObject;

static PyTypeObject CountersType;

/* tally.TYPES: CoreDNS's monitored qtypes, in the order of their cells; else TYPE_OTHER. */
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

PyDoc_STRVAR(counters_read_doc,
"read()\n--\n\n"
"A copy of the cells, as a list of ints (the layout of kdns.serve.tally).");

static PyObject *
counters_read(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    CountersObject *counters = (CountersObject *)self;
    PyObject *list = PyList_New(C_CELLS);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < C_CELLS; i++) {
        PyObject *value = PyLong_FromUnsignedLongLong(counters->cells[i]);
        if (value == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, value);
    }
    return list;
}

PyDoc_STRVAR(counters_set_divert_doc,
"set_divert(flag)\n--\n\n"
"While true, serve() returns before its next receive (the Python loop serves then).");

static PyObject *
counters_set_divert(PyObject *self, PyObject *flag)
{
    int truth = PyObject_IsTrue(flag);
    if (truth < 0) {
        return NULL;
    }
    ((CountersObject *)self)->divert = truth;
    Py_RETURN_NONE;
}

static PyMethodDef counters_methods[] = {
    {"read", counters_read, METH_NOARGS, counters_read_doc},
    {"set_divert", counters_set_divert, METH_O, counters_set_divert_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CountersType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kdns.serve._fastpath.Counters",
    .tp_doc = PyDoc_STR("The per-query counts of one C serving loop (kdns/serve/tally.py cells)."),
    .tp_basicsize = sizeof(CountersObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_methods = counters_methods,
};

/* Interned attribute and method names, made once at import. */
static PyObject *str_table;
static PyObject *str_records;
static PyObject *str_answer;
static PyObject *str_max_udp_size;
static PyObject *str_opt;
static PyObject *str_opt_do;
static PyObject *str_stopping;
static PyObject *str_errors;
static PyObject *str_deferred_sender;
static PyObject *logger; /* logging.getLogger("kdns.serve.accel"), made on first use */

/* --- the fast path ------------------------------------------------------------------------- */

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
} Plan;

static void
plan_release(Plan *plan)
{
    Py_CLEAR(plan->entry);
    Py_CLEAR(plan->opt);
}

/* packet[:2] + head + packet[12:qend] + body + opt, into ``out`` (plan->total bytes). */
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

/* The records-dict entry for the question that ends at ``end`` (a new reference), or NULL
 * (no exception set) for a miss or anything unexpected. */
static PyObject *
lookup_entry(PyObject *responder, const unsigned char *packet, Py_ssize_t end)
{
    Py_ssize_t key_len = end + 5 - HEADER_SIZE;
    PyObject *key = PyBytes_FromStringAndSize(NULL, key_len);
    if (key == NULL) {
        PyErr_Clear();
        return NULL;
    }
    unsigned char *k = (unsigned char *)PyBytes_AS_STRING(key);
    Py_ssize_t name_len = end + 1 - HEADER_SIZE;
    for (Py_ssize_t i = 0; i < name_len; i++) {
        unsigned char c = packet[HEADER_SIZE + i];
        k[i] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
    }
    memcpy(k + name_len, packet + end + 1, 4); /* type and class: never case-folded */

    PyObject *entry = NULL;
    PyObject *records = NULL;
    PyObject *table = PyObject_GetAttr(responder, str_table);
    if (table == NULL || table == Py_None) {
        goto done;
    }
    records = PyObject_GetAttr(table, str_records);
    if (records == NULL || !PyDict_CheckExact(records)) {
        goto done; /* a mapping with its own get(): leave it to Python */
    }
#if PY_VERSION_HEX >= 0x030D0000
    (void)PyDict_GetItemRef(records, key, &entry); /* a strong reference, also without a GIL */
#else
    entry = PyDict_GetItemWithError(records, key); /* borrowed: hold it */
    Py_XINCREF(entry);
#endif
done:
    if (PyErr_Occurred()) {
        PyErr_Clear(); /* the Python path meets the same error and handles it */
    }
    Py_XDECREF(records);
    Py_XDECREF(table);
    Py_DECREF(key);
    return entry;
}

/* min(max(client, 512), responder.max_udp_size), or -1 when that is not a C-sized int. */
static long long
udp_limit(PyObject *responder, long client)
{
    PyObject *max_obj = PyObject_GetAttr(responder, str_max_udp_size);
    if (max_obj == NULL) {
        PyErr_Clear();
        return -1;
    }
    long long max_size = -1;
    if (PyLong_Check(max_obj)) {
        max_size = PyLong_AsLongLong(max_obj);
        if (max_size == -1 && PyErr_Occurred()) {
            PyErr_Clear();
        }
    }
    Py_DECREF(max_obj);
    if (max_size < 0) {
        return -1; /* fits nothing here: the Python path decides */
    }
    long long wanted = client > MIN_UDP_SIZE ? client : MIN_UDP_SIZE;
    return wanted < max_size ? wanted : max_size;
}

/* Fill ``plan`` for a query the Python fast path answers from ``table.records``: 1. Else 0,
 * and the caller must use ``responder.answer``. Never leaves an exception set. */
static int
plan_reply(PyObject *responder, const unsigned char *packet, Py_ssize_t n, int tcp, Plan *plan)
{
    memset(plan, 0, sizeof(*plan));
    if (n <= HEADER_SIZE || (packet[2] & 0xF8)) {
        return 0;
    }
    const unsigned char *zero = memchr(packet + HEADER_SIZE, 0, (size_t)(n - HEADER_SIZE));
    if (zero == NULL) {
        return 0;
    }
    Py_ssize_t end = zero - packet;
    Py_ssize_t qend = end + 5;
    if (n < qend) {
        return 0; /* no whole type and class: cannot be a table key */
    }
    PyObject *entry = lookup_entry(responder, packet, end);
    if (entry == NULL) {
        return 0;
    }
    plan->entry = entry;
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) < 2) {
        goto miss;
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
    Py_ssize_t flag_index = (packet[2] & 1) | ((packet[3] & 0x10) >> 3);
    Py_ssize_t question_len = qend - HEADER_SIZE;
    PyObject *head;
    if (memcmp(packet + 4, QD_ONLY, 8) == 0) {
        if (n != qend || (head = head_at(heads, flag_index)) == NULL) {
            goto miss;
        }
        plan->total = 2 + PyBytes_GET_SIZE(head) + question_len + PyBytes_GET_SIZE(body);
        if (!tcp && plan->total > MIN_UDP_SIZE) {
            goto miss; /* truncation: the slow path */
        }
    }
    else if (memcmp(packet + 4, QD_AND_AR, 8) == 0) {
        /* Every length check comes before the byte it guards is read. */
        if (n < qend + OPT_SIZE || memcmp(packet + qend, OPT_PREFIX, 3) != 0 ||
            packet[qend + 6] != 0 ||
            n != qend + OPT_SIZE + ((packet[qend + 9] << 8) | packet[qend + 10])) {
            goto miss;
        }
        if ((head = head_at(heads, 4 | flag_index)) == NULL) {
            goto miss;
        }
        int do_bit = packet[qend + 7] & 0x80;
        PyObject *opt = PyObject_GetAttr(responder, do_bit ? str_opt_do : str_opt);
        if (opt == NULL) {
            PyErr_Clear();
            goto miss;
        }
        plan->opt = opt;
        if (!PyBytes_CheckExact(opt)) {
            goto miss;
        }
        plan->opt_bytes = PyBytes_AS_STRING(opt);
        plan->opt_len = PyBytes_GET_SIZE(opt);
        plan->total =
            2 + PyBytes_GET_SIZE(head) + question_len + PyBytes_GET_SIZE(body) + plan->opt_len;
        if (!tcp) {
            long client = (packet[qend + 3] << 8) | packet[qend + 4];
            if ((long long)plan->total > udp_limit(responder, client)) {
                goto miss;
            }
        }
    }
    else {
        goto miss;
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

/* --- answer() ------------------------------------------------------------------------------ */

PyDoc_STRVAR(answer_doc,
"answer(responder, packet, tcp=False)\n--\n\n"
"The reply to one query, byte-identical to ``responder.answer(packet, tcp)``.\n\n"
"A hit in ``responder.table.records`` is answered here; everything else is\n"
"``responder.answer(packet, tcp)``.");

static PyObject *
fastpath_answer(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"responder", "packet", "tcp", NULL};
    PyObject *responder, *packet, *tcp_obj = Py_False;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "OO|O:answer", kwlist, &responder, &packet, &tcp_obj)) {
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
            if (plan_reply(responder, data, PyBytes_GET_SIZE(packet), tcp, &plan)) {
                PyObject *reply = PyBytes_FromStringAndSize(NULL, plan.total);
                if (reply != NULL) {
                    plan_write(&plan, data, (unsigned char *)PyBytes_AS_STRING(reply));
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
    return PyObject_CallMethodObjArgs(responder, str_answer, packet, tcp_obj, NULL);
}

/* --- serve() ------------------------------------------------------------------------------- */

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
 * count it in responder.errors, as the Python path does; clears it. */
static void
report_error(PyObject *responder, const char *what)
{
    PyObject *exc = take_exception();

    PyObject *errors = PyObject_GetAttr(responder, str_errors);
    if (errors != NULL) {
        PyObject *one = PyLong_FromLong(1);
        PyObject *more = one != NULL ? PyNumber_Add(errors, one) : NULL;
        if (more != NULL) {
            (void)PyObject_SetAttr(responder, str_errors, more);
        }
        Py_XDECREF(more);
        Py_XDECREF(one);
        Py_DECREF(errors);
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
        PyErr_WriteUnraisable(responder);
        return;
    }
    Py_DECREF(result);
    Py_DECREF(exc);
}

/* 1 when ``server._stopping`` is true, 0 when not, -1 when it could not be read. */
static int
stopping(PyObject *server)
{
    PyObject *flag = PyObject_GetAttr(server, str_stopping);
    if (flag == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(flag);
    Py_DECREF(flag);
    return truth;
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
python_reply(PyObject *responder, PyObject *server, const unsigned char *packet, Py_ssize_t n,
             unsigned char *out, int fd, const struct sockaddr_storage *peer, socklen_t peer_len,
             unsigned long long *cells, long long started_ns)
{
    PyObject *query = PyBytes_FromStringAndSize((const char *)packet, n);
    if (query == NULL) {
        report_error(responder, "copying a query");
        return 0;
    }
    PyObject *reply = PyObject_CallMethodOneArg(responder, str_answer, query);
    Py_DECREF(query);
    if (reply == NULL) {
        if (fatal_exception()) {
            return -1;
        }
        report_error(responder, "responder.answer raised");
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
        PyObject *send = started ? PyObject_CallMethodObjArgs(server, str_deferred_sender,
                                                              address, query, started, NULL)
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
            report_error(responder, "handing a deferred reply its send function");
        }
    }
    Py_DECREF(reply);
    return length;
}

PyDoc_STRVAR(serve_doc,
"serve(sock_fd, responder, server, counters=None)\n--\n\n"
"Serve the bound UDP socket ``sock_fd`` until ``server._stopping`` is true after a\n"
"receive returns. Replies are those of ``responder.answer``; a Deferred reply is called\n"
"with ``server.deferred_sender(peer, packet, started_ns)``, as kdns.serve.udp does. Every\n"
"other reply sent is counted in ``counters`` (a Counters) when given; while its divert flag\n"
"is set, serve returns: None before its next receive, or (packet, peer) when it was set\n"
"while serve waited (the caller answers that datagram). Errors answering a packet are\n"
"logged and counted in ``responder.errors``; KeyboardInterrupt and SystemExit (from a signal\n"
"handler) propagate, as from the Python loop; OSError is raised if the descriptor is no\n"
"longer a usable socket.");

static PyObject *
fastpath_serve(PyObject *Py_UNUSED(module), PyObject *args)
{
    int fd;
    PyObject *responder, *server, *counters = Py_None;
    if (!PyArg_ParseTuple(args, "iOO|O:serve", &fd, &responder, &server, &counters)) {
        return NULL;
    }
    unsigned long long *cells = NULL;
    volatile int *divert = NULL;
    if (counters != Py_None) {
        if (!PyObject_TypeCheck(counters, &CountersType)) {
            PyErr_SetString(PyExc_TypeError, "counters must be a kdns.serve._fastpath.Counters");
            return NULL;
        }
        cells = ((CountersObject *)counters)->cells;
        divert = &((CountersObject *)counters)->divert;
    }
    if (stopping(server) < 0) {
        return NULL; /* not a server with a _stopping flag: a caller's bug, say so at once */
    }
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
    Py_INCREF(counters); /* the cells must outlive the loop */

    for (;;) {
        ssize_t n = -1;
        int error = 0;
        int diverted = 0;
        long long started_ns = 0;
        Py_BEGIN_ALLOW_THREADS
        if (pending > 0) {
            send_datagram(fd, out, (size_t)pending, (struct sockaddr *)&peer, peer_len);
        }
        if (divert != NULL && *divert) {
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

        int stop = stopping(server);
        if (stop < 0) {
            if (fatal_exception()) {
                break;
            }
            report_error(responder, "reading server._stopping");
        }
        else if (stop) {
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
        if (divert != NULL && *divert) {
            /* Switched while we waited: this datagram is the Python loop's first. */
            PyObject *address = peer_address(&peer);
            if (address != NULL) {
                result = Py_BuildValue("(y#N)", (const char *)in, (Py_ssize_t)n, address);
            }
            break; /* NULL with an exception: raised to the caller */
        }

        Plan plan;
        if (plan_reply(responder, in, n, 0, &plan)) {
            if (plan.total <= SEND_CAPACITY) {
                plan_write(&plan, in, out);
                pending = plan.total;
                plan_release(&plan);
                if (cells != NULL) {
                    count_reply(cells, in, n, out, pending, peer_family(&peer), 0,
                                monotonic_ns() - started_ns);
                }
                continue;
            }
            plan_release(&plan);
        }
        pending = python_reply(responder, server, in, n, out, fd, &peer, peer_len, cells,
                               started_ns);
        if (pending < 0) {
            break;
        }
    }
    PyMem_RawFree(in);
    PyMem_RawFree(out);
    Py_DECREF(counters);
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
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "kdns.serve._fastpath",
    .m_doc = "The optional C accelerator of the UDP hot path: see kdns/serve/accel.py.",
    .m_size = -1,
    .m_methods = fastpath_methods,
};

static int
intern(PyObject **slot, const char *text)
{
    *slot = PyUnicode_InternFromString(text);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    if (intern(&str_table, "table") < 0 || intern(&str_records, "records") < 0 ||
        intern(&str_answer, "answer") < 0 || intern(&str_max_udp_size, "max_udp_size") < 0 ||
        intern(&str_opt, "_opt") < 0 || intern(&str_opt_do, "_opt_do") < 0 ||
        intern(&str_stopping, "_stopping") < 0 || intern(&str_errors, "errors") < 0 ||
        intern(&str_deferred_sender, "deferred_sender") < 0) {
        return NULL;
    }
    if (PyType_Ready(&CountersType) < 0) {
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
    Py_INCREF(&CountersType);
    if (layout == NULL || PyModule_AddObject(module, "LAYOUT", layout) < 0 ||
        PyModule_AddObject(module, "Counters", (PyObject *)&CountersType) < 0) {
        Py_XDECREF(layout);
        Py_DECREF(&CountersType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
