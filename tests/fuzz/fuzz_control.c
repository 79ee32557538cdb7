/*
 * fuzz_control.c - libFuzzer target for the control API
 * (docs/control-api.md) and for what devices send the plugin: the plugin's
 * own sources (the .c files of emulator/broker) run on the broker stand-in of
 * broker_stub.c, which calls the callbacks the plugin registers.
 *
 * Every input starts a fresh plugin (mosquitto_plugin_init with the
 * development identities and a recording to /dev/null, so that events are
 * built even while no service listens), connects a service principal with an
 * `iothubowner` token through BASIC_AUTH, and connects dev-device and
 * dev-device/dev-module with their SAS tokens, subscribed to their twin,
 * desired, method and C2D topics. The input is a list of chunks separated
 * by CHUNK_SEP ("\n--\n"). A chunk that does not start with '@' is the
 * payload of one CONTROL message from the service principal; '@' chunks
 * act as the broker or a device would:
 *
 *   @1 @2 @3       select the device slot the next '@' chunks use
 *                  (dev-device, dev-device/dev-module, the extra identity)
 *   @c<id>         connect slot 3 as identity <id> ("d" or "d/m"), signed
 *                  with its registry key, subscribed like the others
 *   @R<body>       the slot publishes a reported patch (twin PATCH)
 *   @G             the slot asks for its twin (twin GET)
 *   @M[<status>/?$rid=<rid>]\n<body>  the slot answers a method (default: 200
 *                  to the newest call)
 *   @T<topic>\n<body>        the slot publishes on any topic
 *   @S<filter> @U<filter>    the slot subscribes / unsubscribes
 *   @D             the slot disconnects
 *   @C @P          the slot connects again, clean (and subscribes) or with
 *                  its persistent session
 *   @X             a second connection takes the slot's session over
 *   @A<policy>     the service principal reconnects with another policy
 *   @K[seconds]    TICK, then time advanced by that many seconds for
 *                  method timeouts and token expiry (and the kicks queued
 *                  for the tick performed)
 *
 * Contracts checked (FUZZ_CHECK), besides crashes, ASan/UBSan and leaks:
 * every message on the response topic is JSON {"responses": [...]} whose
 * entries have "command" and either "data" or "error" with "status" and
 * "errorCode"; a request answers every command exactly once, in order,
 * echoing its correlationData (invokeMethod answers in a message of its
 * own); a request without a commands array gets one answer with command
 * null; a query page holds at most pageSize items and its continuation is
 * the position right after it (only such positions are accepted back); every
 * event is a well-formed record with increasing seq; every topic the hub
 * publishes on is a valid MQTT topic name (UTF-8 as libmosquitto checks it,
 * no wildcards), never retained, at QoS 0 or 1; a twin request gets exactly
 * one answer with the right shape; the plugin's connection bookkeeping
 * agrees with the stand-in's (queued kicks included); after a long enough TICK no method call is
 * pending; and the registry still exports a document that loads again.
 */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <stdbool.h>

#include "broker_stub.h"
#include "fuzz_common.h"
#include "journal.h"
#include "json.h"
#include "plugin.h"
#include "registry.h"
#include "sas.h"
#include "th_limits.h"
#include "util.h"

#define CHUNK_SEP "\n--\n"
#define HOST "twinhub"
#define SVC_ID "svc-fuzz"
#define MAX_CLIENTS 64
#define MAX_CHUNKS 64

static char pid_storage;
static mosquitto_plugin_id_t *const PID = (mosquitto_plugin_id_t *)&pid_storage;

static struct brk_plugin *P;
static struct mosquitto *svc;
static char svc_policy[64];
/* Slots 1..3: the device connection each '@' chunk acts as, and the identity it is. */
static struct {
    struct mosquitto *c;
    char dev[160], mod[160];
    bool is_module;
} slot[4];
static int cur = 1;
static struct mosquitto *clients[MAX_CLIENTS];
static size_t nclients;
static int64_t token_seq;
static uint64_t last_event_seq;
static unsigned rid_seq;

/* ---- helpers ---- */

/*
 * UTF-8 as mosquitto_validate_utf8 (libmosquitto 2.0.11) accepts it: what a
 * client checks in every topic it receives, and the broker in every topic a
 * client sends. Besides well-formed UTF-8 (no overlong forms, surrogates or
 * code points past U+10FFFF) it refuses U+0000-U+001F, U+007F-U+009F and the
 * non-characters U+FDD0-U+FDEF and U+xFFFE/U+xFFFF.
 */
static bool valid_utf8(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned c = s[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            n = 1;
            cp = c;
        } else if ((c & 0xE0) == 0xC0 && c >= 0xC2) {
            n = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0 && c <= 0xF4) {
            n = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i < n)
            return false;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF) || cp <= 0x1F || (cp >= 0x7F && cp <= 0x9F) ||
            (cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFF) >= 0xFFFE)
            return false;
        i += n;
    }
    return true;
}

/* A topic name a PUBLISH may carry (MQTT 3.1.1 4.7): non-empty UTF-8, no wildcards. */
static bool valid_topic_name(const char *t)
{
    size_t n = strlen(t);
    return n > 0 && n <= 65535 && !strpbrk(t, "+#") && valid_utf8((const unsigned char *)t, n);
}

/* A filter a SUBSCRIBE may carry (4.7.1): '+' fills a level, '#' only the last one. */
static bool valid_topic_filter(const char *f)
{
    size_t n = strlen(f);
    if (n == 0 || n > 65535 || !valid_utf8((const unsigned char *)f, n))
        return false;
    for (size_t i = 0; i < n; i++) {
        bool starts = i == 0 || f[i - 1] == '/', ends = i + 1 == n || f[i + 1] == '/';
        if (f[i] == '+' && !(starts && ends))
            return false;
        if (f[i] == '#' && !(starts && i + 1 == n))
            return false;
    }
    return true;
}

static struct mosquitto *new_client(const char *id, const char *username, const char *password,
                                    bool clean)
{
    if (nclients == MAX_CLIENTS)
        return NULL;
    struct mosquitto *c = calloc(1, sizeof *c);
    FUZZ_CHECK(c);
    c->id = strdup(id);
    c->username = username ? strdup(username) : NULL;
    c->password = password ? strdup(password) : NULL;
    c->protocol_version = 4;
    c->clean_session = clean;
    clients[nclients++] = c;
    return c;
}

static void free_clients(void)
{
    for (size_t i = 0; i < nclients; i++) {
        FUZZ_CHECK(!clients[i]->connected);
        free(clients[i]->id);
        free(clients[i]->username);
        free(clients[i]->password);
        free(clients[i]);
    }
    nclients = 0;
}

static int acl(struct mosquitto *c, const char *topic, int access, int qos)
{
    struct mosquitto_evt_acl_check ed = {
        .client = c, .topic = topic, .access = access, .qos = (uint8_t)qos};
    return stub_call(MOSQ_EVT_ACL_CHECK, &ed);
}

/* ---- connections ---- */

static bool connect_service(const char *policy)
{
    const struct th_policy *pol = th_registry_policy(P->reg, policy, strlen(policy));
    char token[1024];
    if (!pol || th_sas_sign(HOST, pol->primary_key, th_now_us() / 1000000 + 3600 + ++token_seq,
                            policy, token, sizeof token) != TH_OK)
        return false;
    struct mosquitto *c = new_client(SVC_ID, HOST, token, true);
    if (!c)
        return false;
    if (stub_connect(c) != MOSQ_ERR_SUCCESS)
        return false;
    svc = c;
    snprintf(svc_policy, sizeof svc_policy, "%s", policy);
    FUZZ_CHECK(acl(c, TH_CONTROL_RESPONSE_TOPIC, MOSQ_ACL_SUBSCRIBE, 1) == MOSQ_ERR_SUCCESS);
    FUZZ_CHECK(acl(c, "$twinhub/events/#", MOSQ_ACL_SUBSCRIBE, 1) == MOSQ_ERR_SUCCESS);
    FUZZ_CHECK(acl(c, TH_CONTROL_TOPIC, MOSQ_ACL_WRITE, 1) == MOSQ_ERR_SUCCESS);
    return true;
}

/* The service principal is connected (reconnected with its policy, else iothubowner). */
static bool ensure_service(void)
{
    if (svc && svc->connected)
        return true;
    if (svc_policy[0] && connect_service(svc_policy))
        return true;
    return connect_service("iothubowner");
}

static void subscribe_all(int s)
{
    struct mosquitto *c = slot[s].c;
    char c2d[256];
    static const char *const filters[] = {
        "$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#"};
    for (size_t i = 0; i < 3; i++)
        (void)acl(c, filters[i], MOSQ_ACL_SUBSCRIBE, 1);
    if (!slot[s].is_module) {
        /* An id with '+' or '#' makes its own filter invalid: such a device uses '+'. */
        snprintf(c2d, sizeof c2d, "devices/%s/messages/devicebound/#", slot[s].dev);
        if (!valid_topic_filter(c2d))
            snprintf(c2d, sizeof c2d, "devices/+/messages/devicebound/#");
        (void)acl(c, c2d, MOSQ_ACL_SUBSCRIBE, 1);
    }
}

/* Connect slot s as its identity with a fresh token; returns the CONNECT result. */
static int connect_slot(int s, bool clean, bool subscribe)
{
    const char *dev = slot[s].dev, *mod = slot[s].is_module ? slot[s].mod : NULL;
    char uri[512], user[600], id[400], token[1200];
    struct th_identity *ident = th_registry_find(P->reg, dev, mod);
    snprintf(uri, sizeof uri, "%s/devices/%s%s%s", HOST, dev, mod ? "/modules/" : "",
             mod ? mod : "");
    snprintf(user, sizeof user, "%s/%s%s%s/?api-version=2021-04-12&DeviceClientType=fuzz", HOST,
             dev, mod ? "/" : "", mod ? mod : "");
    snprintf(id, sizeof id, "%s%s%s", dev, mod ? "/" : "", mod ? mod : "");
    if (!ident || th_sas_sign(uri, ident->primary_key, th_now_us() / 1000000 + 3600 + ++token_seq,
                              NULL, token, sizeof token) != TH_OK)
        snprintf(token, sizeof token, "SharedAccessSignature sr=%s&sig=AAAA&se=1", HOST);
    struct mosquitto *c = new_client(id, user, token, clean);
    if (!c)
        return MOSQ_ERR_NOMEM;
    int rc = stub_connect(c);
    /* The slot follows the newest connection even when refused (it stays disconnected). */
    slot[s].c = c;
    if (rc == MOSQ_ERR_SUCCESS && subscribe)
        subscribe_all(s);
    return rc;
}

/* ---- checking what the plugin published ---- */

struct expect {
    const cJSON *cmds;   /* the request's commands, or NULL when it has none */
    bool bad_request;    /* not JSON / no commands array */
    size_t main_entries; /* entries expected in the request's own answer */
    size_t own_answers;  /* invokeMethod answers in messages of their own */
    bool control;
};

static void check_entry(const cJSON *e)
{
    FUZZ_CHECK(cJSON_IsObject(e));
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(e, "command");
    FUZZ_CHECK(cJSON_IsString(cmd) || cJSON_IsNull(cmd));
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(e, "data");
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(e, "error");
    FUZZ_CHECK((data != NULL) != (err != NULL));
    if (err) {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(e, "status");
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "errorCode");
        FUZZ_CHECK(cJSON_IsString(err) && err->valuestring[0]);
        FUZZ_CHECK(cJSON_IsNumber(st) && st->valuedouble >= 400 && st->valuedouble <= 599);
        FUZZ_CHECK(cJSON_IsNumber(code) && code->valuedouble >= 100000 &&
                   code->valuedouble <= 599999);
    }
}

/* Whether `e` answers command `c` (same name, same correlationData). */
static bool answers(const cJSON *e, const cJSON *c)
{
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(e, "command");
    const cJSON *cn = cJSON_GetObjectItemCaseSensitive(c, "command");
    bool named = cJSON_IsObject(c) && cJSON_IsString(cn);
    if (named ? !(cJSON_IsString(en) && !strcmp(en->valuestring, cn->valuestring))
              : !cJSON_IsNull(en))
        return false;
    const cJSON *ec = cJSON_GetObjectItemCaseSensitive(e, "correlationData");
    const cJSON *cc =
        cJSON_IsObject(c) ? cJSON_GetObjectItemCaseSensitive(c, "correlationData") : NULL;
    if (!ec || !cc)
        return !ec && !cc;
    /* Echoed verbatim: compare the texts (cJSON_Compare misjudges duplicate keys). */
    char *a = cJSON_PrintUnformatted(ec), *b = cJSON_PrintUnformatted(cc);
    FUZZ_CHECK(a && b);
    bool same = !strcmp(a, b);
    free(a);
    free(b);
    return same;
}

/* What a successful answer promises about its command (docs/control-api.md). */
static void check_answer(const cJSON *e, const cJSON *c)
{
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(e, "data");
    const char *name = th_json_string(c, "command", "");
    if (!data)
        return;
    if (!strcmp(name, "query")) {
        /* A page holds at most pageSize items and the next page starts right after it. */
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(data, "items");
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(data, "continuation");
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(c, "pageSize");
        const char *cont = th_json_string(c, "continuation", NULL);
        double page = cJSON_IsNumber(ps) ? ps->valuedouble : 100;
        FUZZ_CHECK(cJSON_IsArray(items) && cJSON_GetArraySize(items) <= page);
        FUZZ_CHECK(cJSON_IsString(next) || cJSON_IsNull(next));
        /* The hub issues decimal positions; anything else is refused, not read as a number. */
        size_t digits = cont ? strspn(cont, "0123456789") : 0;
        errno = 0;
        unsigned long long from = cont ? strtoull(cont, NULL, 10) : 0;
        if (cont && (!cont[0] || cont[digits] != '\0' || errno == ERANGE)) {
            fprintf(stderr, "query accepted the continuation '%s', which it never issues\n", cont);
            abort();
        }
        if (cJSON_IsString(next)) {
            /* The next page starts right after this one (no wrap-around). */
            unsigned long long want = from + (unsigned long long)page;
            errno = 0;
            unsigned long long got = strtoull(next->valuestring, NULL, 10);
            if (want < from || got != want || errno == ERANGE) {
                fprintf(stderr, "query page from %llu (size %g) continues at %s\n", from, page,
                        next->valuestring);
                abort();
            }
        }
    } else if (!strcmp(name, "sendC2D")) {
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(data, "queued");
        FUZZ_CHECK(cJSON_IsNumber(q) && q->valuedouble >= 0 && q->valuedouble <= 50);
    } else if (!strcmp(name, "getTwin") || !strcmp(name, "getDevice")) {
        FUZZ_CHECK(
            !strcmp(th_json_string(data, "deviceId", ""), th_json_string(c, "deviceId", "?")));
    }
}

static void check_event(const struct stub_publish *m)
{
    FUZZ_CHECK(m->client_id == NULL && m->qos == 1);
    /* Every record the plugin publishes reads back with the journal's own parser, has a kind
     * the journal knows and an object as data, and goes out on the journal's topic for it. */
    cJSON *rec = NULL;
    struct th_journal_record r;
    FUZZ_CHECK(th_journal_parse_text(m->payload, m->len, SIZE_MAX, 1000, &rec, &r, NULL) == TH_OK);
    FUZZ_CHECK(r.seq > 0 && (uint64_t)r.seq > last_event_seq);
    last_event_seq = (uint64_t)r.seq;
    FUZZ_CHECK(r.kind != TH_JOURNAL_OTHER);
    FUZZ_CHECK(cJSON_IsObject(r.data));
    size_t need = th_journal_topic(r.kind, r.device_id, r.module_id, NULL, 0);
    char *topic = malloc(need + 1);
    FUZZ_CHECK(topic != NULL);
    th_journal_topic(r.kind, r.device_id, r.module_id, topic, need + 1);
    FUZZ_CHECK(!strcmp(m->topic, topic));
    free(topic);
    cJSON_Delete(rec);
}

/* A message to a device: its topic and body have the shape protocol.md gives them. */
static void check_device_msg(const struct stub_publish *m, unsigned *twin_answers)
{
    FUZZ_CHECK(m->client_id != NULL);
    if (!strncmp(m->topic, "$iothub/twin/res/", 17)) {
        (*twin_answers)++;
        int status = atoi(m->topic + 17);
        FUZZ_CHECK(status >= 200 && status <= 599);
        FUZZ_CHECK(strstr(m->topic, "/?$rid=") != NULL);
        if (status == 204) {
            FUZZ_CHECK(m->len == 0 && strstr(m->topic, "&$version=") != NULL);
        } else {
            cJSON *body = cJSON_ParseWithLength(m->payload, m->len);
            FUZZ_CHECK(cJSON_IsObject(body));
            if (status >= 300)
                FUZZ_CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(body, "errorCode")));
            else
                FUZZ_CHECK(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(body, "desired")) &&
                           cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(body, "reported")));
            cJSON_Delete(body);
        }
    } else if (!strncmp(m->topic, "$iothub/twin/PATCH/properties/desired/", 38)) {
        cJSON *body = cJSON_ParseWithLength(m->payload, m->len);
        FUZZ_CHECK(cJSON_IsObject(body) &&
                   cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(body, "$version")));
        cJSON_Delete(body);
    } else if (!strncmp(m->topic, "$iothub/methods/POST/", 21)) {
        FUZZ_CHECK(strstr(m->topic, "/?$rid=") != NULL);
        cJSON *body = cJSON_ParseWithLength(m->payload, m->len);
        FUZZ_CHECK(body != NULL);
        cJSON_Delete(body);
    } else {
        /* C2D, to a device (never a module), its id with '+' and '#' encoded. */
        char prefix[600];
        size_t n = (size_t)snprintf(prefix, sizeof prefix, "devices/");
        for (const char *p = m->client_id; *p && n + 4 < sizeof prefix; p++)
            n += (size_t)snprintf(prefix + n, sizeof prefix - n, "%s",
                                  *p == '+'   ? "%2B"
                                  : *p == '#' ? "%23"
                                              : (char[2]){*p, 0});
        snprintf(prefix + n, sizeof prefix - n, "/messages/devicebound/");
        FUZZ_CHECK(!strchr(m->client_id, '/'));
        FUZZ_CHECK(!strncmp(m->topic, prefix, strlen(prefix)));
    }
}

/* Check and free everything published since the last call. */
static void check_publishes(const struct expect *x, unsigned *twin_answers)
{
    struct stub_publish *list = stub_take_publishes();
    size_t n_resp = 0, own = 0;
    const struct stub_publish *last_resp = NULL;
    static int verbose = -1;
    if (verbose < 0)
        verbose = getenv("FUZZ_VERBOSE") != NULL;
    for (const struct stub_publish *m = list; m; m = m->next) {
        if (verbose)
            fprintf(stderr, "[publish to %s] %s %.*s\n", m->client_id ? m->client_id : "*",
                    m->topic, (int)(m->len < 600 ? m->len : 600), m->payload);
        if (!valid_topic_name(m->topic)) {
            fprintf(stderr, "the hub published on an invalid topic name: '%s'\n", m->topic);
            abort();
        }
        FUZZ_CHECK(!m->retain && (m->qos == 0 || m->qos == 1));
        if (!strcmp(m->topic, TH_CONTROL_RESPONSE_TOPIC)) {
            FUZZ_CHECK(m->client_id && !strcmp(m->client_id, SVC_ID));
            cJSON *doc = cJSON_ParseWithLength(m->payload, m->len);
            FUZZ_CHECK(cJSON_IsObject(doc) && cJSON_GetArraySize(doc) == 1);
            const cJSON *arr = cJSON_GetObjectItemCaseSensitive(doc, "responses");
            FUZZ_CHECK(cJSON_IsArray(arr) && cJSON_GetArraySize(arr) > 0);
            const cJSON *e;
            cJSON_ArrayForEach(e, arr) check_entry(e);
            cJSON_Delete(doc);
            n_resp++;
            last_resp = m;
        } else if (!strncmp(m->topic, TH_JOURNAL_TOPIC_PREFIX, strlen(TH_JOURNAL_TOPIC_PREFIX))) {
            check_event(m);
        } else {
            check_device_msg(m, twin_answers);
        }
    }
    if (x && x->control) {
        /* The request's own answer is the last response message when it has entries. */
        size_t main_n = 0;
        if (x->main_entries) {
            FUZZ_CHECK(last_resp != NULL);
            cJSON *doc = cJSON_ParseWithLength(last_resp->payload, last_resp->len);
            const cJSON *arr = cJSON_GetObjectItemCaseSensitive(doc, "responses");
            main_n = (size_t)cJSON_GetArraySize(arr);
            if (main_n != x->main_entries) {
                fprintf(stderr, "expected %zu answers in the request's message, got %zu: %.*s\n",
                        x->main_entries, main_n, (int)last_resp->len, last_resp->payload);
                abort();
            }
            if (x->bad_request) {
                FUZZ_CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(arr->child, "command")));
                FUZZ_CHECK(cJSON_GetObjectItemCaseSensitive(arr->child, "error") != NULL);
            } else {
                /* One answer per command, in order: the entries are a subsequence. */
                const cJSON *c = x->cmds->child;
                const cJSON *e;
                cJSON_ArrayForEach(e, arr)
                {
                    while (c && !answers(e, c))
                        c = c->next;
                    if (!c) {
                        char *t = cJSON_PrintUnformatted(e);
                        fprintf(stderr, "answer %s matches no command in order\n", t ? t : "?");
                        abort();
                    }
                    check_answer(e, c);
                    c = c->next;
                }
            }
            cJSON_Delete(doc);
        }
        own = n_resp - (x->main_entries ? 1 : 0);
        if (own != x->own_answers) {
            fprintf(stderr, "expected %zu invokeMethod answers of their own, got %zu\n",
                    x->own_answers, own);
            abort();
        }
    }
    stub_publishes_free(list);
}

/* ---- the plugin's bookkeeping agrees with the broker's ---- */

static size_t count_calls(void)
{
    size_t n = 0;
    for (const struct brk_method_call *m = P->calls; m; m = m->next)
        n++;
    return n;
}

static void check_glue(struct th_identity *id)
{
    struct brk_idglue *g = id->glue;
    if (!g || !g->conn)
        return;
    struct brk_conn *c = NULL;
    struct brk_conn *x, *tmp;
    HASH_ITER(hh, P->conns, x, tmp)
    if (x == g->conn)
        c = x;
    FUZZ_CHECK(c != NULL); /* not a freed connection */
    FUZZ_CHECK(c->kind == BRK_CONN_DEVICE && c->identity == id);
    struct mosquitto *mc = (struct mosquitto *)c->client;
    FUZZ_CHECK(mc->connected); /* the plugin thinks a closed connection is online */
    FUZZ_CHECK(id->connected);
}

static void check_state(void)
{
    unsigned services = 0, kicks = 0;
    struct brk_conn *c, *tmp;
    HASH_ITER(hh, P->conns, c, tmp)
    {
        const struct mosquitto *mc = c->client;
        FUZZ_CHECK(mc->connected); /* DISCONNECT removes the record */
        FUZZ_CHECK(!strcmp(c->client_id, mc->id));
        FUZZ_CHECK(c->kicked || !c->kick_queued);
        services += c->kind == BRK_CONN_SERVICE;
        kicks += c->kick_queued;
    }
    FUZZ_CHECK(services == P->service_conns);
    FUZZ_CHECK(kicks == P->kicks_queued); /* queued kicks wait for the tick (conn.c) */
    for (struct th_identity *d = th_registry_next_device(P->reg, NULL); d;
         d = th_registry_next_device(P->reg, d)) {
        check_glue(d);
        for (size_t i = 0; i < d->module_count; i++) {
            FUZZ_CHECK(d->modules[i]->parent == d);
            check_glue(d->modules[i]);
        }
    }
}

/* ---- chunks ---- */

static void control(const char *payload, size_t len)
{
    if (!ensure_service())
        return;
    struct expect x = {.control = true};
    cJSON *root = NULL;
    struct th_error e = {0};
    if (th_json_parse(payload, len, TH_JSON_MAX_INPUT_BYTES + 65536, 64, &root, &e) == TH_OK &&
        cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(root, "commands")))
        x.cmds = cJSON_GetObjectItemCaseSensitive(root, "commands");
    else
        x.bad_request = true;
    uint64_t first_id = P->next_call_id;
    size_t before = count_calls();
    char *copy = fuzz_cstr((const uint8_t *)payload, len); /* the broker's payloads end in NUL */
    struct mosquitto_evt_control ed = {.client = svc,
                                       .topic = TH_CONTROL_TOPIC,
                                       .payload = copy,
                                       .payloadlen = (uint32_t)len,
                                       .qos = 1};
    FUZZ_CHECK(stub_call(MOSQ_EVT_CONTROL, &ed) == MOSQ_ERR_SUCCESS);
    size_t created = (size_t)(P->next_call_id - first_id), after = count_calls();
    FUZZ_CHECK(before + created >= after);
    if (x.bad_request) {
        FUZZ_CHECK(created == 0);
        x.main_entries = 1;
    } else {
        size_t n = (size_t)cJSON_GetArraySize(x.cmds);
        FUZZ_CHECK(created <= n);
        x.main_entries = n - created;
    }
    x.own_answers = before + created - after;
    unsigned twin = 0;
    check_publishes(&x, &twin);
    free(copy);
    cJSON_Delete(root);
}

/* The slot's device publishes `payload` on `topic` (ACL first, as the broker does). */
static int device_publish(const char *topic, const char *payload, size_t len, int qos, bool retain)
{
    struct mosquitto *c = slot[cur].c;
    if (!c || !c->connected || !valid_topic_name(topic))
        return -1;
    if (acl(c, topic, MOSQ_ACL_WRITE, qos) != MOSQ_ERR_SUCCESS)
        return -1;
    char *t = strdup(topic);
    char *copy = fuzz_cstr((const uint8_t *)payload, len);
    FUZZ_CHECK(t);
    struct mosquitto_evt_message ed = {.client = c,
                                       .topic = t,
                                       .payload = copy,
                                       .payloadlen = (uint32_t)len,
                                       .qos = (uint8_t)qos,
                                       .retain = retain};
    int rc = stub_call(MOSQ_EVT_MESSAGE, &ed);
    /* Consumed (ACL_DENIED), or the connection is closed for a protocol violation. */
    FUZZ_CHECK(rc != MOSQ_ERR_SUCCESS);
    if (rc != MOSQ_ERR_ACL_DENIED)
        stub_disconnect(c);
    free(t);
    free(copy);
    return rc;
}

/* A twin request must get exactly one answer (unless the connection was closed). */
static void twin_request(const char *topic, const char *payload, size_t len)
{
    int rc = device_publish(topic, payload, len, 0, false);
    unsigned twin = 0;
    check_publishes(NULL, &twin);
    if (rc == MOSQ_ERR_ACL_DENIED)
        FUZZ_CHECK(twin == 1);
}

/* "first line\nrest": split at the first newline (no newline: all header). */
static void split_line(const char *s, size_t len, char *head, size_t hsize, const char **rest,
                       size_t *rlen)
{
    const char *nl = memchr(s, '\n', len);
    size_t hl = nl ? (size_t)(nl - s) : len;
    snprintf(head, hsize, "%.*s", (int)(hl < hsize - 1 ? hl : hsize - 1), s);
    *rest = nl ? nl + 1 : s + len;
    *rlen = nl ? len - hl - 1 : 0;
}

static void op(const char *s, size_t len)
{
    char code = len ? s[0] : '\0';
    const char *arg = len ? s + 1 : s;
    size_t alen = len ? len - 1 : 0;
    char head[512], topic[700];
    const char *body;
    size_t blen;
    struct mosquitto *c = slot[cur].c;
    bool online = c && c->connected;
    switch (code) {
    case '1':
    case '2':
    case '3':
        cur = code - '0';
        break;
    case 'c': {
        snprintf(head, sizeof head, "%.*s", (int)(alen < 300 ? alen : 300), arg);
        char *slash = strchr(head, '/');
        if (slash)
            *slash = '\0';
        if (!head[0] || strlen(head) >= sizeof slot[3].dev ||
            (slash && strlen(slash + 1) >= sizeof slot[3].mod))
            break;
        stub_disconnect(slot[3].c);
        snprintf(slot[3].dev, sizeof slot[3].dev, "%s", head);
        snprintf(slot[3].mod, sizeof slot[3].mod, "%s", slash ? slash + 1 : "");
        slot[3].is_module = slash != NULL;
        cur = 3;
        (void)connect_slot(3, true, true);
        break;
    }
    case 'R':
        if (!online)
            break;
        snprintf(topic, sizeof topic, "$iothub/twin/PATCH/properties/reported/?$rid=%u", ++rid_seq);
        twin_request(topic, arg, alen);
        break;
    case 'G':
        if (!online)
            break;
        snprintf(topic, sizeof topic, "$iothub/twin/GET/?$rid=%u", ++rid_seq);
        twin_request(topic, "", 0);
        break;
    case 'M':
        if (!online)
            break;
        split_line(arg, alen, head, sizeof head, &body, &blen);
        if (head[0])
            snprintf(topic, sizeof topic, "$iothub/methods/res/%s", head);
        else
            snprintf(topic, sizeof topic, "$iothub/methods/res/200/?$rid=%llu",
                     (unsigned long long)(P->next_call_id - 1));
        (void)device_publish(topic, body, blen, 0, false);
        break;
    case 'T':
        if (!online)
            break;
        split_line(arg, alen, head, sizeof head, &body, &blen);
        (void)device_publish(head, body, blen, (int)(alen % 3), alen & 4);
        break;
    case 'S':
    case 'U':
        if (!online)
            break;
        /* The broker refuses an invalid filter before asking the plugin. */
        snprintf(head, sizeof head, "%.*s", (int)(alen < 500 ? alen : 500), arg);
        if (valid_topic_filter(head))
            (void)acl(c, head, code == 'S' ? MOSQ_ACL_SUBSCRIBE : MOSQ_ACL_UNSUBSCRIBE, 1);
        break;
    case 'D':
        stub_disconnect(c);
        break;
    case 'C':
    case 'P':
        if (slot[cur].dev[0]) {
            stub_disconnect(c);
            (void)connect_slot(cur, code == 'C', code == 'C');
        }
        break;
    case 'X':
        if (online)
            (void)connect_slot(cur, false, false); /* the stand-in disconnects the old one */
        break;
    case 'A':
        snprintf(head, sizeof head, "%.*s", (int)(alen < 63 ? alen : 63), arg);
        stub_disconnect(svc);
        if (!connect_service(head))
            (void)connect_service("iothubowner");
        break;
    case 'K': {
        snprintf(head, sizeof head, "%.*s", (int)(alen < 12 ? alen : 12), arg);
        long secs = strtol(head, NULL, 10);
        struct mosquitto_evt_tick ed = {0};
        FUZZ_CHECK(stub_call(MOSQ_EVT_TICK, &ed) == MOSQ_ERR_SUCCESS);
        if (secs > 0) {
            if (secs > 100000)
                secs = 100000;
            brk_methods_tick(P, th_mono_ms() + secs * 1000);
            brk_conn_scan_expired(P, th_now_us() / 1000000 + secs);
            brk_conn_do_kicks(P); /* the kicks the scan queued, as the next TICK would */
        }
        break;
    }
    default:
        break;
    }
    check_publishes(NULL, &(unsigned){0});
}

/* ---- one input ---- */

static void setup(void)
{
    stub_reset();
    nclients = 0;
    token_seq = 0;
    last_event_seq = 0;
    rid_seq = 0;
    cur = 1;
    svc = NULL;
    svc_policy[0] = '\0';
    memset(slot, 0, sizeof slot);
    /* A recording too (to /dev/null): events are built even while no service listens. */
    struct mosquitto_opt opts[] = {{(char *)"dev_identities", (char *)"true"},
                                   {(char *)"record", (char *)"/dev/null"}};
    void *ud = NULL;
    FUZZ_CHECK(mosquitto_plugin_init(PID, &ud, opts, 2) == MOSQ_ERR_SUCCESS);
    P = ud;
    FUZZ_CHECK(P != NULL && stub_callback_count() == 6);
    FUZZ_CHECK(connect_service("iothubowner"));
    snprintf(slot[1].dev, sizeof slot[1].dev, "%s", TH_DEV_DEVICE_ID);
    snprintf(slot[2].dev, sizeof slot[2].dev, "%s", TH_DEV_DEVICE_ID);
    snprintf(slot[2].mod, sizeof slot[2].mod, "%s", TH_DEV_MODULE_ID);
    slot[2].is_module = true;
    FUZZ_CHECK(connect_slot(1, true, true) == MOSQ_ERR_SUCCESS);
    FUZZ_CHECK(connect_slot(2, true, true) == MOSQ_ERR_SUCCESS);
    check_publishes(NULL, &(unsigned){0});
    check_state();
}

static void teardown(void)
{
    /* Long enough for every method call: sent ones time out, unsent ones give up. */
    int64_t far = th_mono_ms() + 1000LL * 1000 * 1000;
    brk_methods_tick(P, far);
    brk_methods_tick(P, far + 1000LL * 1000 * 1000);
    FUZZ_CHECK(P->calls == NULL);
    check_publishes(NULL, &(unsigned){0});

    /* The registry exports a document that loads again. */
    cJSON *doc = th_registry_export(P->reg, true);
    FUZZ_CHECK(doc != NULL);
    struct th_registry *copy = th_registry_new();
    struct th_error e = {0};
    if (th_registry_load(copy, doc, th_now_us(), &e) != TH_OK) {
        fprintf(stderr, "the hub's export does not load: %s\n", e.message);
        abort();
    }
    th_registry_free(copy);
    cJSON_Delete(doc);

    for (size_t i = 0; i < nclients; i++)
        stub_disconnect(clients[i]);
    FUZZ_CHECK(P->conns == NULL && P->service_conns == 0 && P->kicks_queued == 0);
    check_publishes(NULL, &(unsigned){0});
    FUZZ_CHECK(mosquitto_plugin_cleanup(P, NULL, 0) == MOSQ_ERR_SUCCESS);
    FUZZ_CHECK(stub_callback_count() == 0);
    P = NULL;
    free_clients();
    stub_reset();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    const char *s = (const char *)data, *end = s + size;
    int chunks = 0;
    while (s <= end && chunks++ < MAX_CHUNKS) {
        const char *sep = memmem(s, (size_t)(end - s), CHUNK_SEP, sizeof CHUNK_SEP - 1);
        const char *stop = sep ? sep : end;
        size_t len = (size_t)(stop - s);
        if (len && s[0] == '@')
            op(s + 1, len - 1);
        else if (len)
            control(s, len);
        check_state();
        if (!sep)
            break;
        s = sep + sizeof CHUNK_SEP - 1;
    }
    teardown();
    return 0;
}
