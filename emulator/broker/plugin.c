/*
 * plugin.c - entry points of the twinhub mosquitto plugin: version
 * negotiation, options, callback registration and cleanup, and logging.
 * The plugin turns a stock mosquitto 2.0 broker into an IoT Hub device
 * endpoint (docs/protocol.md) with a service control API
 * (docs/control-api.md). The callbacks live in conn.c (DISCONNECT, TICK),
 * auth.c (BASIC_AUTH), acl.c (ACL_CHECK), device_msgs.c (MESSAGE) and
 * control.c (CONTROL); plugin.h says which file provides what.
 *
 * Options (plugin_opt_*): registry FILE, dev_identities true|false,
 * verbose true|false, token_skew_seconds N (the clock skew every token check allows,
 * default TH_AUTH_TOKEN_SKEW_S), state_dir DIR, state_report FILE (where to write what
 * loading DIR restored and set aside), record FILE, hub_name HOST (the assignedHub the
 * provisioning service gives devices; default localhost), dps_id_scope SCOPE (default
 * TH_DPS_DEFAULT_ID_SCOPE), front_secret HEX (the TLS shim's and WebSocket bridge's
 * per-start secret, 64 hex digits: CONNECT passwords they vouched for carry a client
 * certificate, core/x509.h), tls_shim required (the MQTT/TLS listener relies on the TLS
 * shim preloaded into mosquitto: refuse to start without it, tlsshim_link.c).
 */
#define _GNU_SOURCE /* RTLD_DEFAULT */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "auth.h"
#include "dps.h"
#include "hmac.h"
#include "cacert.h"
#include "json.h"
#include "plugin.h"
#include "th_file.h"
#include "util.h"

/* Returns the heap's freed pages to the system: glibc's malloc_trim, and jemalloc's purge of every
 * arena when the broker runs on it (serve preloads it: serve.c find_broker_malloc), which would
 * otherwise keep them until its decay time has passed. */
static void release_free_memory(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
    int (*mallctl)(const char *, void *, size_t *, void *, size_t) =
        (int (*)(const char *, void *, size_t *, void *, size_t))dlsym(RTLD_DEFAULT, "mallctl");
    if (mallctl) {
        /* 4096 is MALLCTL_ARENAS_ALL (jemalloc 5's "arena.<i>.purge", every arena). */
        (void)mallctl("arena.4096.purge", NULL, NULL, NULL, 0);
    }
}

/* The --registry file: the same bound as an importRegistry document. */
/* A fleet of 100,000 devices with 1 KB twins is a registry file of about 130 MB. */
#define TH_REGISTRY_FILE_MAX_BYTES (256u * 1024 * 1024)

/* The plugin is built with -fvisibility=hidden; only the entry points are exported. */
#define BRK_PLUGIN_API __attribute__((visibility("default")))

void brk_log(struct brk_plugin *p, int level, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    if (!p->verbose && (level == MOSQ_LOG_INFO || level == MOSQ_LOG_DEBUG)) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    mosquitto_log_printf(level, "twinhub: %s", buf);
}

static bool opt_true(const char *v)
{
    return v && (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"));
}

static int load_registry_file(struct brk_plugin *p, const char *path)
{
    size_t len = 0;
    char *text = th_file_read(path, TH_REGISTRY_FILE_MAX_BYTES, &len);
    cJSON *doc = NULL;
    struct th_error err = {0};
    if (!text) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "twinhub: cannot read registry file %s: %s", path,
                             strerror(errno));
        return MOSQ_ERR_INVAL;
    }
    th_result r = th_json_parse(text, len, TH_REGISTRY_FILE_MAX_BYTES, 64, &doc, &err);
    free(text);
    if (r == TH_OK) {
        r = th_registry_load(p->reg, doc, th_now_us(), &err);
        if (r == TH_OK) {
            r = th_dps_load(p->dps, cJSON_GetObjectItemCaseSensitive(doc, "dps"), th_now_us(),
                            &err);
        }
        cJSON_Delete(doc);
    }
    if (r != TH_OK) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "twinhub: registry file %s is invalid: %s", path,
                             err.message);
        return MOSQ_ERR_INVAL;
    }
    mosquitto_log_printf(MOSQ_LOG_NOTICE, "twinhub: loaded %zu devices from %s",
                         th_registry_device_count(p->reg), path);
    return MOSQ_ERR_SUCCESS;
}

BRK_PLUGIN_API int mosquitto_plugin_version(int supported_version_count,
                                            const int *supported_versions)
{
    for (int i = 0; i < supported_version_count; i++) {
        if (supported_versions[i] == 5) {
            return 5;
        }
    }
    return -1;
}

static void plugin_free(struct brk_plugin *p)
{
    if (!p) {
        return;
    }
    brk_methods_free_all(p);
    brk_jobs_free_all(p);
    brk_conn_free_all(p);
    brk_config_free(p);
    if (p->reg) {
        brk_idglue_free_all(p);
        th_registry_free(p->reg);
    }
    if (p->record_fd >= 0) {
        close(p->record_fd);
    }
    free(p->state_dir);
    th_dps_free(p->dps);
    free(p->hub_host);
    th_cacerts_free(p->cas);
    OPENSSL_cleanse(p->front_secret, sizeof p->front_secret);
    free(p);
}

/* 64 hex digits into 32 bytes. */
static bool parse_secret(const char *hex, uint8_t out[TH_X509_SECRET_LEN])
{
    if (!hex || strlen(hex) != 2 * TH_X509_SECRET_LEN)
        return false;
    for (size_t i = 0; i < TH_X509_SECRET_LEN; i++) {
        int hi = th_hex_value(hex[2 * i]), lo = th_hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

BRK_PLUGIN_API int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
                                         struct mosquitto_opt *opts, int opt_count)
{
    struct brk_plugin *p = calloc(1, sizeof *p);
    const char *registry_path = NULL, *record_path = NULL, *report_path = NULL;
    const char *id_scope = NULL;
    bool restored = false;
    bool dev = true, tls_shim = false;
    int rc;

    if (!p) {
        return MOSQ_ERR_NOMEM;
    }
    p->pid = identifier;
    p->next_call_id = 1;
    p->record_fd = -1;
    p->token_skew_s = TH_AUTH_TOKEN_SKEW_S; /* CONNECT and service callers alike */
    p->reg = th_registry_new();
    if (!p->reg) {
        plugin_free(p);
        return MOSQ_ERR_NOMEM;
    }
    for (int i = 0; i < opt_count; i++) {
        if (!strcmp(opts[i].key, "registry")) {
            registry_path = opts[i].value;
        } else if (!strcmp(opts[i].key, "dev_identities")) {
            dev = opt_true(opts[i].value);
        } else if (!strcmp(opts[i].key, "verbose")) {
            p->verbose = opt_true(opts[i].value);
        } else if (!strcmp(opts[i].key, "state_dir")) {
            free(p->state_dir);
            p->state_dir = strdup(opts[i].value);
        } else if (!strcmp(opts[i].key, "state_report")) {
            report_path = opts[i].value;
        } else if (!strcmp(opts[i].key, "record")) {
            record_path = opts[i].value;
        } else if (!strcmp(opts[i].key, "hub_name")) {
            free(p->hub_host);
            p->hub_host = strdup(opts[i].value);
        } else if (!strcmp(opts[i].key, "dps_id_scope")) {
            id_scope = opts[i].value;
        } else if (!strcmp(opts[i].key, "token_skew_seconds")) {
            p->token_skew_s = strtoll(opts[i].value, NULL, 10);
        } else if (!strcmp(opts[i].key, "front_secret")) {
            if (!parse_secret(opts[i].value, p->front_secret)) {
                mosquitto_log_printf(MOSQ_LOG_ERR,
                                     "twinhub: plugin_opt_front_secret must be %d "
                                     "hex digits",
                                     2 * TH_X509_SECRET_LEN);
                plugin_free(p);
                return MOSQ_ERR_INVAL;
            }
            p->has_front_secret = true;
        } else if (!strcmp(opts[i].key, "tls_shim")) {
            tls_shim = !strcmp(opts[i].value, "required");
        } else {
            mosquitto_log_printf(MOSQ_LOG_WARNING, "twinhub: ignoring unknown option plugin_opt_%s",
                                 opts[i].key);
        }
    }
    if (tls_shim && (rc = brk_tlsshim_link(p)) != MOSQ_ERR_SUCCESS) {
        plugin_free(p);
        return rc;
    }
    if (!p->hub_host && !(p->hub_host = strdup("localhost"))) {
        plugin_free(p);
        return MOSQ_ERR_NOMEM;
    }
    if (!(p->dps = th_dps_new(id_scope))) {
        mosquitto_log_printf(MOSQ_LOG_ERR,
                             "twinhub: plugin_opt_dps_id_scope '%s' must be 1-64 letters and "
                             "digits",
                             id_scope ? id_scope : "");
        plugin_free(p);
        return MOSQ_ERR_INVAL;
    }
    bool dps_restored = false;
    if ((rc = brk_dps_load_state(p, &dps_restored)) != MOSQ_ERR_SUCCESS) {
        plugin_free(p);
        return rc;
    }
    if ((rc = brk_certs_load(p)) != MOSQ_ERR_SUCCESS ||
        (p->state_dir && (rc = brk_persist_load(p, report_path, &restored)) != MOSQ_ERR_SUCCESS)) {
        plugin_free(p);
        return rc;
    }
    if (p->state_dir && (rc = brk_jobs_load(p)) != MOSQ_ERR_SUCCESS) {
        plugin_free(p);
        return rc;
    }
    /* Restored state is authoritative: the registry file and the development identities seed
     * a state directory on first use only, so identities deleted since then stay deleted.
     * The registry file goes before the development identities so that it may redefine them. */
    if (!restored && registry_path &&
        (rc = load_registry_file(p, registry_path)) != MOSQ_ERR_SUCCESS) {
        plugin_free(p);
        return rc;
    }
    if (restored && registry_path) {
        mosquitto_log_printf(MOSQ_LOG_NOTICE,
                             "twinhub: state restored from %s; registry file %s not applied again",
                             p->state_dir, registry_path);
    }
    /* Every hub has its default policies (unless the registry file redefined them); the
     * development device and module come only with dev_identities. */
    if (!restored && (dev ? th_registry_add_dev_identities(p->reg, th_now_us())
                          : th_registry_add_default_policies(p->reg)) != TH_OK) {
        plugin_free(p);
        return MOSQ_ERR_NOMEM;
    }
    if ((rc = brk_config_load(p)) != MOSQ_ERR_SUCCESS) {
        plugin_free(p);
        return rc;
    }
    p->configs_dirty = true;
    /* Parsing a large registry file or state directory leaves hundreds of MB of freed heap
     * (100,000 devices: the text and its parse tree); give it back to the system. */
    release_free_memory();
    /* Restored files are already what they would be written as; rewriting 100,000 of them
     * (each a rename over the old file) made a restart take minutes (performance.md). */
    if (restored) {
        brk_persist_policies(p);
    } else {
        brk_persist_all(p);
    }
    brk_dps_persist(p);
    if (record_path && (rc = brk_record_open(p, record_path)) != MOSQ_ERR_SUCCESS) {
        plugin_free(p);
        return rc;
    }

    struct {
        int event;
        MOSQ_FUNC_generic_callback cb;
        const char *data;
    } cbs[] = {
        {MOSQ_EVT_BASIC_AUTH, brk_on_basic_auth, NULL},
        {MOSQ_EVT_ACL_CHECK, brk_on_acl_check, NULL},
        {MOSQ_EVT_MESSAGE, brk_on_message, NULL},
        {MOSQ_EVT_DISCONNECT, brk_on_disconnect, NULL},
        {MOSQ_EVT_TICK, brk_on_tick, NULL},
        {MOSQ_EVT_CONTROL, brk_on_control, TH_CONTROL_TOPIC},
    };
    for (size_t i = 0; i < sizeof cbs / sizeof cbs[0]; i++) {
        rc = mosquitto_callback_register(identifier, cbs[i].event, cbs[i].cb, cbs[i].data, p);
        if (rc != MOSQ_ERR_SUCCESS) {
            mosquitto_log_printf(MOSQ_LOG_ERR, "twinhub: cannot register callback %d: %s",
                                 cbs[i].event, mosquitto_strerror(rc));
            plugin_free(p);
            return rc;
        }
    }
    *userdata = p;
    mosquitto_log_printf(MOSQ_LOG_NOTICE, "twinhub: plugin ready, %zu devices registered",
                         th_registry_device_count(p->reg));
    return MOSQ_ERR_SUCCESS;
}

BRK_PLUGIN_API int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts,
                                            int opt_count)
{
    struct brk_plugin *p = userdata;
    (void)opts;
    (void)opt_count;
    if (p) {
        mosquitto_callback_unregister(p->pid, MOSQ_EVT_BASIC_AUTH, brk_on_basic_auth, NULL);
        mosquitto_callback_unregister(p->pid, MOSQ_EVT_ACL_CHECK, brk_on_acl_check, NULL);
        mosquitto_callback_unregister(p->pid, MOSQ_EVT_MESSAGE, brk_on_message, NULL);
        mosquitto_callback_unregister(p->pid, MOSQ_EVT_DISCONNECT, brk_on_disconnect, NULL);
        mosquitto_callback_unregister(p->pid, MOSQ_EVT_TICK, brk_on_tick, NULL);
        mosquitto_callback_unregister(p->pid, MOSQ_EVT_CONTROL, brk_on_control, TH_CONTROL_TOPIC);
    }
    plugin_free(p);
    th_hmac_release(); /* the plugin is unloaded next: release the SAS check's SHA-256 */
    return MOSQ_ERR_SUCCESS;
}
