/*
 * dps_x509.c - X.509 attestation in the provisioning service (dps_x509.h).
 */
#include "dps_x509.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "cacert.h"
#include "json.h"
#include "util.h"
#include "x509.h"

#define CERT_TEXT_MAX 65536

static th_result fail(struct th_error *err, th_result r, int status, int code, const char *fmt,
                      ...) __attribute__((format(printf, 5, 6)));
static th_result fail(struct th_error *err, th_result r, int status, int code, const char *fmt,
                      ...)
{
    char msg[sizeof err->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    th_error_set(err, r, code, "%s", msg);
    if (err)
        err->status = status;
    return r;
}

/* A certificate from PEM text or base64 DER ("PEM or CER representation"); NULL when neither. */
static X509 *read_cert(const char *text)
{
    size_t len = text ? strlen(text) : 0;
    if (!len || len > CERT_TEXT_MAX)
        return NULL;
    if (strstr(text, "-----BEGIN")) {
        BIO *b = BIO_new_mem_buf(text, (int)len);
        X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        return x;
    }
    char *clean = malloc(len + 1);
    uint8_t *der = malloc(len);
    size_t n = 0, dlen = 0;
    X509 *x = NULL;
    if (clean && der) {
        for (size_t i = 0; i < len; i++)
            if (text[i] != ' ' && text[i] != '\n' && text[i] != '\r' && text[i] != '\t')
                clean[n++] = text[i];
        if (th_b64_decode(clean, n, der, len, &dlen) == TH_OK) {
            const unsigned char *p = der;
            x = d2i_X509(NULL, &p, (long)dlen);
        }
    }
    free(clean);
    free(der);
    return x;
}

static void thumbs(const X509 *x, char sha1[41], char sha256[TH_X509_THUMB_BUF])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    static const char hx[] = "0123456789ABCDEF";
    X509_digest(x, EVP_sha1(), md, &n);
    for (unsigned i = 0; i < n && i < 20; i++) {
        sha1[2 * i] = hx[md[i] >> 4];
        sha1[2 * i + 1] = hx[md[i] & 15];
    }
    sha1[40] = '\0';
    X509_digest(x, EVP_sha256(), md, &n);
    for (unsigned i = 0; i < n && i < 32; i++) {
        sha256[2 * i] = hx[md[i] >> 4];
        sha256[2 * i + 1] = hx[md[i] & 15];
    }
    sha256[64] = '\0';
}

static bool cn_of(const X509 *x, char *buf, size_t size)
{
    X509_NAME *nm = X509_get_subject_name(x);
    int i = nm ? X509_NAME_get_index_by_NID(nm, NID_commonName, -1) : -1;
    if (i < 0)
        return false;
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(nm, i)));
    if (n < 0)
        return false;
    snprintf(buf, size, "%.*s", n, (const char *)utf8);
    OPENSSL_free(utf8);
    return true;
}

/* ---- enrollments ---- */

static const cJSON *member(const cJSON *o, const char *name)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, name);
    return m && !cJSON_IsNull(m) ? m : NULL;
}

/* One X509CertificateWithInfo: "" when fine, else what is wrong. `required`: must be present. */
static const char *check_cert(const cJSON *c, bool required, bool info_ok)
{
    if (!c)
        return required ? "is required" : "";
    if (!cJSON_IsObject(c))
        return "must be an object {\"certificate\": PEM}";
    const cJSON *t = member(c, "certificate");
    if (t) {
        X509 *x = cJSON_IsString(t) ? read_cert(t->valuestring) : NULL;
        X509_free(x);
        return x ? "" : "certificate is not a PEM or base64 DER certificate";
    }
    const cJSON *info = member(c, "info");
    if (info_ok && (th_x509_thumbprint_valid(th_json_string(info, "sha1Thumbprint", NULL)) ||
                    th_x509_thumbprint_valid(th_json_string(info, "sha256Thumbprint", NULL))))
        return "";
    return info_ok ? "needs a certificate (or info.sha1Thumbprint / info.sha256Thumbprint)"
                   : "needs a certificate";
}

th_result th_dps_x509_check(const cJSON *x509, bool group, struct th_error *err)
{
    const char *why;
    if (!cJSON_IsObject(x509))
        return fail(err, TH_ERR_INVAL, 400, TH_DPS_EC_BAD_REQUEST,
                    "attestation.x509 must be an object: %s",
                    group ? "{\"signingCertificates\": {\"primary\": {\"certificate\": PEM}}} or "
                            "{\"caReferences\": {\"primary\": name}}"
                          : "{\"clientCertificates\": {\"primary\": {\"certificate\": PEM}}}");
    const cJSON *client = member(x509, "clientCertificates");
    const cJSON *signing = member(x509, "signingCertificates");
    const cJSON *refs = member(x509, "caReferences");
    if (!group) {
        if (signing || refs)
            return fail(err, TH_ERR_INVAL, 400, TH_DPS_EC_BAD_REQUEST,
                        "attestation.x509 of an individual enrollment takes clientCertificates; "
                        "signingCertificates and caReferences are for enrollment groups");
        if (client && !cJSON_IsObject(client))
            return fail(err, TH_ERR_INVAL, 400, TH_DPS_EC_BAD_REQUEST,
                        "attestation.x509.clientCertificates must be an object");
        static const char *const which[] = {"primary", "secondary"};
        for (int i = 0; i < 2; i++) {
            why = check_cert(member(client, which[i]), i == 0, true);
            if (why[0])
                return fail(err, TH_ERR_INVAL, 400, TH_DPS_EC_BAD_REQUEST,
                            "attestation.x509.clientCertificates.%s %s", which[i], why);
        }
        return TH_OK;
    }
    if (client)
        return fail(err, TH_ERR_INVAL, 400, TH_DPS_EC_BAD_REQUEST,
                    "attestation.x509 of an enrollment group takes signingCertificates or "
                    "caReferences; clientCertificates are for individual enrollments");
    if (!signing == !refs)
        return fail(err, TH_ERR_INVAL, 400, TH_DPS_EC_BAD_REQUEST,
                    "attestation.x509 of an enrollment group needs exactly one of "
                    "signingCertificates and caReferences");
    if (signing) {
        if (!cJSON_IsObject(signing))
            return fail(err, TH_ERR_INVAL, 400, TH_DPS_EC_BAD_REQUEST,
                        "attestation.x509.signingCertificates must be an object");
        static const char *const which[] = {"primary", "secondary"};
        for (int i = 0; i < 2; i++) {
            why = check_cert(member(signing, which[i]), i == 0, false);
            if (why[0])
                return fail(err, TH_ERR_INVAL, 400, TH_DPS_EC_BAD_REQUEST,
                            "attestation.x509.signingCertificates.%s %s", which[i], why);
        }
        return TH_OK;
    }
    const cJSON *p = member(refs, "primary"), *s = member(refs, "secondary");
    if (!cJSON_IsObject(refs) || !cJSON_IsString(p) || !p->valuestring[0] ||
        (s && !cJSON_IsString(s)))
        return fail(err, TH_ERR_INVAL, 400, TH_DPS_EC_BAD_REQUEST,
                    "attestation.x509.caReferences must be {\"primary\": name, \"secondary\": "
                    "name}, naming CA certificates of the hub");
    return TH_OK;
}

static bool asn1_utc(const ASN1_TIME *t, char buf[TH_TIME_BUF])
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return false;
    int64_t s = (int64_t)timegm(&tm);
    th_time_format(s * 1000000, buf);
    return true;
}

static bool fill_one(cJSON *c)
{
    const cJSON *t = member(c, "certificate");
    if (!cJSON_IsString(t))
        return true; /* thumbprint-only info, kept as sent */
    X509 *x = read_cert(t->valuestring);
    if (!x)
        return true;
    char sha1[41], sha256[TH_X509_THUMB_BUF], cn[512], issuer[512], nb[TH_TIME_BUF],
        na[TH_TIME_BUF];
    thumbs(x, sha1, sha256);
    X509_NAME_oneline(X509_get_subject_name(x), cn, sizeof cn);
    X509_NAME_oneline(X509_get_issuer_name(x), issuer, sizeof issuer);
    bool ok = asn1_utc(X509_get0_notBefore(x), nb) && asn1_utc(X509_get0_notAfter(x), na);
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *serial = bn ? BN_bn2hex(bn) : NULL;
    cJSON *info = cJSON_CreateObject();
    ok = ok && info && serial && cJSON_AddStringToObject(info, "subjectName", cn) &&
         cJSON_AddStringToObject(info, "sha1Thumbprint", sha1) &&
         cJSON_AddStringToObject(info, "sha256Thumbprint", sha256) &&
         cJSON_AddStringToObject(info, "issuerName", issuer) &&
         cJSON_AddStringToObject(info, "notBeforeUtc", nb) &&
         cJSON_AddStringToObject(info, "notAfterUtc", na) &&
         cJSON_AddStringToObject(info, "serialNumber", serial) &&
         cJSON_AddNumberToObject(info, "version", (double)X509_get_version(x) + 1);
    OPENSSL_free(serial);
    BN_free(bn);
    X509_free(x);
    if (!ok) {
        cJSON_Delete(info);
        return false;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(c, "info");
    return cJSON_AddItemToObject(c, "info", info);
}

bool th_dps_x509_fill_info(cJSON *x509)
{
    static const char *const sets[] = {"clientCertificates", "signingCertificates"};
    static const char *const which[] = {"primary", "secondary"};
    for (int s = 0; s < 2; s++) {
        cJSON *set = cJSON_GetObjectItemCaseSensitive(x509, sets[s]);
        for (int i = 0; cJSON_IsObject(set) && i < 2; i++) {
            cJSON *c = cJSON_GetObjectItemCaseSensitive(set, which[i]);
            if (cJSON_IsObject(c) && !fill_one(c))
                return false;
        }
    }
    return true;
}

/* ---- registration ---- */

static bool enabled(const struct th_dps_enrollment *e)
{
    return !strcmp(th_json_string(e->doc, "provisioningStatus", "enabled"), "enabled");
}

static const cJSON *x509_of(const struct th_dps_enrollment *e)
{
    return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(e->doc, "attestation"),
                                            "x509");
}

/* The client certificate `c` (X509CertificateWithInfo) is the leaf (by either thumbprint). */
static bool cert_matches(const cJSON *c, const char *sha1, const char *sha256)
{
    const cJSON *t = member(c, "certificate");
    if (cJSON_IsString(t)) {
        X509 *x = read_cert(t->valuestring);
        char s1[41], s256[TH_X509_THUMB_BUF];
        if (!x)
            return false;
        thumbs(x, s1, s256);
        X509_free(x);
        return !strcmp(s1, sha1) && !strcmp(s256, sha256);
    }
    const cJSON *info = member(c, "info");
    return th_x509_thumbprint_matches(th_json_string(info, "sha1Thumbprint", NULL), sha1, sha256) ||
           th_x509_thumbprint_matches(th_json_string(info, "sha256Thumbprint", NULL), sha1, sha256);
}

/* The chain leads to `anchor` (the leaf's intermediates as the client sent them). */
static bool leads_to(const struct th_x509_chain *chain, X509 *anchor, int64_t now_s)
{
    X509_STORE *store = X509_STORE_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    bool ok = false;
    if (!store || !untrusted || !ctx || X509_STORE_add_cert(store, anchor) != 1)
        goto out;
    for (size_t i = 1; i < th_x509_chain_count(chain); i++)
        if (!sk_X509_push(untrusted, (X509 *)th_x509_chain_at(chain, i)))
            goto out;
    if (X509_STORE_CTX_init(ctx, store, (X509 *)th_x509_chain_at(chain, 0), untrusted) != 1)
        goto out;
    X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_time(vp, (time_t)now_s);
    X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_PARTIAL_CHAIN);
    ok = X509_verify_cert(ctx) == 1;
out:
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
    X509_STORE_free(store);
    return ok;
}

/* The hub's CA certificate `name`, when verified; NULL otherwise. *exists says it is there. */
static X509 *ca_named(const struct th_cacerts *cas, const char *name, bool *exists)
{
    for (size_t i = 0; cas && name; i++) {
        const char *n;
        bool verified;
        const X509 *x = th_cacerts_x509_at(cas, i, &n, &verified);
        if (!x)
            break;
        if (!strcmp(n, name)) {
            *exists = true;
            return verified ? (X509 *)x : NULL;
        }
    }
    return NULL;
}

/* Whether group `e` accepts the chain; `why` gets a note on a referenced CA that is not usable. */
static bool group_accepts(const struct th_dps_enrollment *e, const struct th_x509_chain *chain,
                          const struct th_cacerts *cas, int64_t now_s, char *why, size_t why_size)
{
    const cJSON *x509 = x509_of(e);
    const cJSON *signing = member(x509, "signingCertificates");
    const cJSON *refs = member(x509, "caReferences");
    static const char *const which[] = {"primary", "secondary"};
    for (int i = 0; i < 2; i++) {
        const cJSON *t = member(member(signing, which[i]), "certificate");
        if (cJSON_IsString(t)) {
            X509 *x = read_cert(t->valuestring);
            bool ok = x && leads_to(chain, x, now_s);
            X509_free(x);
            if (ok)
                return true;
        }
        const char *name = th_json_string(refs, which[i], NULL);
        if (name && name[0]) {
            bool exists = false;
            X509 *ca = ca_named(cas, name, &exists);
            if (ca && leads_to(chain, ca, now_s))
                return true;
            if (!ca && why[0] == '\0')
                snprintf(why, why_size,
                         exists ? " (group '%s' references CA certificate '%s', which is not "
                                  "verified)"
                                : " (group '%s' references CA certificate '%s', which the hub "
                                  "does not have)",
                         e->id, name);
        }
    }
    return false;
}

th_result th_dps_attest_x509(struct th_dps *dps, const char *id_scope, const char *registration_id,
                             const struct th_x509_chain *chain, const struct th_cacerts *cas,
                             int64_t now_s, struct th_dps_attest *out, struct th_error *err)
{
    memset(out, 0, sizeof *out);
    if (!dps || !id_scope || strcmp(id_scope, dps->id_scope))
        return fail(err, TH_ERR_NOT_FOUND, 404, TH_DPS_EC_NOT_FOUND,
                    "no provisioning service with ID scope '%s' here", id_scope ? id_scope : "");
    if (!registration_id ||
        !th_dps_registration_id_valid(registration_id, strlen(registration_id)))
        return fail(err, TH_ERR_INVAL, 400, TH_DPS_EC_BAD_REQUEST,
                    "'%s' is not a valid registration id", registration_id ? registration_id : "");
    const X509 *leaf = th_x509_chain_at(chain, 0);
    if (!leaf)
        return fail(err, TH_ERR_AUTH, 401, TH_DPS_EC_UNAUTHORIZED,
                    "registration '%s' sent no SAS token and no client certificate",
                    registration_id);
    char cn[512];
    if (!cn_of(leaf, cn, sizeof cn) || strcmp(cn, registration_id))
        return fail(err, TH_ERR_AUTH, 401, TH_DPS_EC_UNAUTHORIZED,
                    "the client certificate's subject CN '%s' is not the registration id '%s' "
                    "(with X.509 attestation the registration id is the leaf's CN)",
                    cn_of(leaf, cn, sizeof cn) ? cn : "", registration_id);
    time_t now = (time_t)now_s;
    if (X509_cmp_time(X509_get0_notBefore(leaf), &now) > 0 ||
        X509_cmp_time(X509_get0_notAfter(leaf), &now) < 0)
        return fail(err, TH_ERR_AUTH, 401, TH_DPS_EC_UNAUTHORIZED,
                    "the client certificate of registration '%s' is expired or not valid yet",
                    registration_id);
    char sha1[41], sha256[TH_X509_THUMB_BUF];
    thumbs(leaf, sha1, sha256);
    out->x509 = true;
    snprintf(out->thumbprint, sizeof out->thumbprint, "%s", sha256);

    struct th_dps_enrollment *ind = th_dps_find(dps, false, registration_id);
    if (ind) {
        if (ind->attestation != TH_DPS_ATT_X509)
            return fail(err, TH_ERR_AUTH, 401, TH_DPS_EC_UNAUTHORIZED,
                        "the individual enrollment '%s' uses %s attestation; register with %s",
                        registration_id,
                        ind->attestation == TH_DPS_ATT_TPM ? "TPM" : "symmetric-key",
                        ind->attestation == TH_DPS_ATT_TPM ? "a TPM" : "its SAS token");
        const cJSON *client = member(x509_of(ind), "clientCertificates");
        if (!cert_matches(member(client, "primary"), sha1, sha256) &&
            !cert_matches(member(client, "secondary"), sha1, sha256))
            return fail(err, TH_ERR_AUTH, 401, TH_DPS_EC_UNAUTHORIZED,
                        "the client certificate (SHA-1 %s, SHA-256 %s) is neither the primary "
                        "nor the secondary certificate of the individual enrollment '%s'",
                        sha1, sha256, registration_id);
        if (!enabled(ind))
            return fail(err, TH_ERR_DISABLED, 401, TH_DPS_EC_UNAUTHORIZED,
                        "the individual enrollment '%s' is disabled", registration_id);
        out->enrollment = ind;
        return TH_OK;
    }
    struct th_dps_enrollment *disabled = NULL;
    char why[300] = "";
    for (struct th_dps_enrollment *e = dps->enrollments; e; e = e->next) {
        if (!e->group || e->attestation != TH_DPS_ATT_X509 ||
            !group_accepts(e, chain, cas, now_s, why, sizeof why))
            continue;
        if (enabled(e)) {
            out->enrollment = e;
            return TH_OK;
        }
        if (!disabled)
            disabled = e;
    }
    if (disabled)
        return fail(err, TH_ERR_DISABLED, 401, TH_DPS_EC_UNAUTHORIZED,
                    "the enrollment group '%s' is disabled", disabled->id);
    return fail(err, TH_ERR_AUTH, 401, TH_DPS_EC_UNAUTHORIZED,
                "no individual enrollment '%s', and the client certificate does not chain to the "
                "signing certificate or CA of any X.509 enrollment group%s",
                registration_id, why);
}
