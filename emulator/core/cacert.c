/*
 * cacert.c - the hub's CA certificates (cacert.h), shaped as the Azure Resource Manager
 * resource Microsoft.Devices/IotHubs/certificates (api-version 2021-07-02): in
 * {"properties":{"certificate": PEM, "isVerified": bool}}; out {"name","etag","type",
 * "properties":{"subject","expiry","thumbprint","isVerified","created","updated","certificate"}}
 * (times RFC 1123); a list is {"value":[...]}; generateVerificationCode adds
 * properties.verificationCode; verify takes {"certificate": PEM}
 * (sdk-facts-x509-dps-fleet.md; the REST reference "Certificates").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "cacert.h"
#include "json.h"
#include "util.h"

struct cacert {
    char name[TH_CACERT_MAX_NAME + 1];
    char *pem; /* malloc'd, as uploaded */
    X509 *x509;
    bool verified;
    int64_t created_us, updated_us;
    uint64_t etag_counter;
    char code[49]; /* the last verification code; "" for none */
};

struct th_cacerts {
    struct cacert *items; /* malloc'd array */
    size_t n;
};

struct th_cacerts *th_cacerts_new(void)
{
    return calloc(1, sizeof(struct th_cacerts));
}

static void cacert_clear(struct cacert *c)
{
    free(c->pem);
    X509_free(c->x509);
    memset(c, 0, sizeof *c);
}

void th_cacerts_free(struct th_cacerts *cas)
{
    if (!cas)
        return;
    for (size_t i = 0; i < cas->n; i++)
        cacert_clear(&cas->items[i]);
    free(cas->items);
    free(cas);
}

size_t th_cacerts_count(const struct th_cacerts *cas)
{
    return cas ? cas->n : 0;
}

static struct cacert *find(const struct th_cacerts *cas, const char *name)
{
    for (size_t i = 0; cas && name && i < cas->n; i++)
        if (strcmp(cas->items[i].name, name) == 0)
            return &cas->items[i];
    return NULL;
}

const void *th_cacerts_x509_at(const struct th_cacerts *cas, size_t i, const char **name,
                               bool *verified)
{
    if (!cas || i >= cas->n)
        return NULL;
    *name = cas->items[i].name;
    *verified = cas->items[i].verified;
    return cas->items[i].x509;
}

static bool name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > TH_CACERT_MAX_NAME)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

static X509 *read_pem(const char *pem)
{
    size_t n = pem ? strlen(pem) : 0;
    if (n == 0 || n > TH_CACERT_MAX_PEM)
        return NULL;
    BIO *b = BIO_new_mem_buf(pem, (int)n);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    return x;
}

/* The etag: base64 of the counter's decimal text, in quotes as ARM writes it. */
static void etag_text(const struct cacert *c, char buf[48])
{
    char dec[24], b64[40];
    snprintf(dec, sizeof dec, "%llu", (unsigned long long)c->etag_counter);
    if (th_b64_encode((const uint8_t *)dec, strlen(dec), b64, sizeof b64) != TH_OK)
        b64[0] = '\0';
    snprintf(buf, 48, "%s", b64);
}

/* If-Match against c: NULL/"*" pass when !required; quotes around the etag are ignored. */
static th_result check_etag(const struct cacert *c, const char *if_match, bool required,
                            struct th_error *err)
{
    if (!if_match || !if_match[0]) {
        if (required)
            return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "this operation needs an If-Match header: the certificate's "
                                "etag or *");
        return TH_OK;
    }
    if (strcmp(if_match, "*") == 0)
        return c ? TH_OK
                 : th_error_set(err, TH_ERR_NOT_FOUND, TH_EC_NOT_FOUND, "no such certificate");
    char want[48];
    if (c)
        etag_text(c, want);
    size_t n = strlen(if_match);
    const char *m = if_match;
    if (n >= 2 && m[0] == '"' && m[n - 1] == '"') {
        m++;
        n -= 2;
    }
    if (!c || strlen(want) != n || memcmp(want, m, n) != 0)
        return th_error_set(err, TH_ERR_PRECONDITION, TH_EC_PRECONDITION_FAILED,
                            "If-Match '%s' is not the certificate's etag", if_match);
    return TH_OK;
}

static void rfc1123(int64_t s, char buf[40])
{
    time_t t = (time_t)s;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, 40, "%a, %d %b %Y %H:%M:%S GMT", &tm))
        snprintf(buf, 40, "?");
}

static bool asn1_seconds(const ASN1_TIME *t, int64_t *out)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(t, &tm) != 1)
        return false;
    *out = (int64_t)timegm(&tm);
    return true;
}

static cJSON *cert_json(const struct cacert *c)
{
    cJSON *o = cJSON_CreateObject(), *p = cJSON_CreateObject();
    char etag[48], subject[512] = "", expiry[40] = "", created[40], updated[40], sha1[41] = "";
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned mdn = 0;
    int64_t exp_s;
    X509_NAME_oneline(X509_get_subject_name(c->x509), subject, sizeof subject);
    /* ARM writes the subject as "CN=name", OpenSSL as "/CN=name/O=x": turn one into the other. */
    char subj[512];
    size_t w = 0;
    for (const char *s = subject[0] == '/' ? subject + 1 : subject; *s && w + 3 < sizeof subj;
         s++) {
        if (*s == '/') {
            subj[w++] = ',';
            subj[w++] = ' ';
        } else {
            subj[w++] = *s;
        }
    }
    subj[w] = '\0';
    if (asn1_seconds(X509_get0_notAfter(c->x509), &exp_s))
        rfc1123(exp_s, expiry);
    rfc1123(c->created_us / 1000000, created);
    rfc1123(c->updated_us / 1000000, updated);
    if (X509_digest(c->x509, EVP_sha1(), md, &mdn) == 1 && mdn == 20)
        for (unsigned i = 0; i < 20; i++)
            snprintf(sha1 + 2 * i, 3, "%02X", md[i]);
    etag_text(c, etag);
    bool ok = o && p && cJSON_AddStringToObject(o, "name", c->name) &&
              cJSON_AddStringToObject(o, "etag", etag) &&
              cJSON_AddStringToObject(o, "type", "Microsoft.Devices/IotHubs/Certificates") &&
              cJSON_AddStringToObject(p, "subject", subj) &&
              cJSON_AddStringToObject(p, "expiry", expiry) &&
              cJSON_AddStringToObject(p, "thumbprint", sha1) &&
              cJSON_AddBoolToObject(p, "isVerified", c->verified) &&
              cJSON_AddStringToObject(p, "created", created) &&
              cJSON_AddStringToObject(p, "updated", updated) &&
              cJSON_AddStringToObject(p, "certificate", c->pem);
    if (ok && cJSON_AddItemToObject(o, "properties", p))
        return o;
    cJSON_Delete(p);
    cJSON_Delete(o);
    return NULL;
}

static th_result not_found(struct th_error *err, const char *name)
{
    return th_error_set(err, TH_ERR_NOT_FOUND, TH_EC_NOT_FOUND, "certificate '%s' does not exist",
                        name ? name : "");
}

static th_result json_out(const struct cacert *c, cJSON **out, struct th_error *err)
{
    if (!out)
        return TH_OK;
    *out = cert_json(c);
    return *out ? TH_OK : th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
}

th_result th_cacerts_put(struct th_cacerts *cas, const char *name, const char *pem, bool verified,
                         const char *if_match, int64_t now_us, cJSON **out, struct th_error *err)
{
    if (out)
        *out = NULL;
    if (!cas || !name_valid(name))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "certificate name '%s' is invalid: 1 to %d letters, digits, '-', "
                            "'_' or '.'",
                            name ? name : "", TH_CACERT_MAX_NAME);
    struct cacert *c = find(cas, name);
    th_result r = check_etag(c, if_match, false, err);
    if (r != TH_OK)
        return r;
    X509 *x = read_pem(pem);
    if (!x)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "properties.certificate holds no PEM certificate");
    char *copy = strdup(pem);
    if (!copy) {
        X509_free(x);
        return th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
    }
    if (!c) {
        if (cas->n >= TH_CACERT_MAX) {
            X509_free(x);
            free(copy);
            return th_error_set(err, TH_ERR_INVAL, TH_EC_IOTHUB_QUOTA_EXCEEDED,
                                "a hub holds at most %d CA certificates", TH_CACERT_MAX);
        }
        struct cacert *items = realloc(cas->items, (cas->n + 1) * sizeof *items);
        if (!items) {
            X509_free(x);
            free(copy);
            return th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
        }
        cas->items = items;
        c = &cas->items[cas->n++];
        memset(c, 0, sizeof *c);
        snprintf(c->name, sizeof c->name, "%s", name);
        c->created_us = now_us;
    } else {
        free(c->pem);
        X509_free(c->x509);
        c->code[0] = '\0';
    }
    c->pem = copy;
    c->x509 = x;
    c->verified = verified;
    c->updated_us = now_us;
    c->etag_counter++;
    return json_out(c, out, err);
}

cJSON *th_cacerts_get_json(const struct th_cacerts *cas, const char *name, struct th_error *err)
{
    struct cacert *c = find(cas, name);
    if (!c) {
        (void)not_found(err, name);
        return NULL;
    }
    cJSON *o = cert_json(c);
    if (!o)
        th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
    return o;
}

cJSON *th_cacerts_list_json(const struct th_cacerts *cas)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = o ? cJSON_AddArrayToObject(o, "value") : NULL;
    if (!arr) {
        cJSON_Delete(o);
        return NULL;
    }
    for (size_t i = 0; cas && i < cas->n; i++) {
        cJSON *c = cert_json(&cas->items[i]);
        if (!c || !cJSON_AddItemToArray(arr, c)) {
            cJSON_Delete(c);
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

th_result th_cacerts_delete(struct th_cacerts *cas, const char *name, const char *if_match,
                            struct th_error *err)
{
    struct cacert *c = find(cas, name);
    if (!c)
        return not_found(err, name);
    th_result r = check_etag(c, if_match, true, err);
    if (r != TH_OK)
        return r;
    size_t i = (size_t)(c - cas->items);
    cacert_clear(c);
    memmove(&cas->items[i], &cas->items[i + 1], (cas->n - i - 1) * sizeof *c);
    cas->n--;
    return TH_OK;
}

th_result th_cacerts_verification_code(struct th_cacerts *cas, const char *name,
                                       const char *if_match, int64_t now_us, cJSON **out,
                                       struct th_error *err)
{
    *out = NULL;
    struct cacert *c = find(cas, name);
    if (!c)
        return not_found(err, name);
    th_result r = check_etag(c, if_match, true, err);
    if (r != TH_OK)
        return r;
    uint8_t rnd[24];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return th_error_set(err, TH_ERR_NOMEM, 0, "no random bytes");
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(c->code + 2 * i, 3, "%02X", rnd[i]);
    c->etag_counter++;
    c->updated_us = now_us;
    if ((r = json_out(c, out, err)) != TH_OK)
        return r;
    cJSON *p = cJSON_GetObjectItemCaseSensitive(*out, "properties");
    if (!cJSON_AddStringToObject(p, "verificationCode", c->code)) {
        cJSON_Delete(*out);
        *out = NULL;
        return th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
    }
    return TH_OK;
}

th_result th_cacerts_verify(struct th_cacerts *cas, const char *name, const char *if_match,
                            const char *pem, int64_t now_us, cJSON **out, struct th_error *err)
{
    *out = NULL;
    struct cacert *c = find(cas, name);
    if (!c)
        return not_found(err, name);
    th_result r = check_etag(c, if_match, true, err);
    if (r != TH_OK)
        return r;
    if (!c->code[0])
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "certificate '%s' has no verification code; call "
                            "generateVerificationCode first",
                            name);
    X509 *x = read_pem(pem);
    if (!x)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "certificate: no PEM verification certificate");
    char cn[256] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
    EVP_PKEY *key = X509_get0_pubkey(c->x509);
    if (strcmp(cn, c->code) != 0) {
        X509_free(x);
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "the verification certificate's subject CN '%s' is not the "
                            "verification code of certificate '%s'",
                            cn, name);
    }
    if (!key || X509_verify(x, key) != 1) {
        X509_free(x);
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "the verification certificate is not signed with the private key of "
                            "certificate '%s'",
                            name);
    }
    X509_free(x);
    c->verified = true;
    c->code[0] = '\0';
    c->etag_counter++;
    c->updated_us = now_us;
    return json_out(c, out, err);
}

cJSON *th_cacerts_state_json(const struct th_cacerts *cas)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && cas && i < cas->n; i++) {
        const struct cacert *c = &cas->items[i];
        cJSON *o = cJSON_CreateObject();
        bool ok = o && cJSON_AddStringToObject(o, "name", c->name) &&
                  cJSON_AddStringToObject(o, "certificate", c->pem) &&
                  cJSON_AddBoolToObject(o, "isVerified", c->verified) &&
                  cJSON_AddNumberToObject(o, "created", (double)c->created_us) &&
                  cJSON_AddNumberToObject(o, "updated", (double)c->updated_us) &&
                  cJSON_AddNumberToObject(o, "etagCounter", (double)c->etag_counter) &&
                  cJSON_AddStringToObject(o, "verificationCode", c->code) &&
                  cJSON_AddItemToArray(arr, o);
        if (!ok) {
            cJSON_Delete(o);
            cJSON_Delete(arr);
            return NULL;
        }
    }
    return arr;
}

th_result th_cacerts_restore(struct th_cacerts *cas, const cJSON *arr, struct th_error *err)
{
    if (!cJSON_IsArray(arr))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "certificates: expected an array");
    struct th_cacerts *fresh = th_cacerts_new();
    if (!fresh)
        return th_error_set(err, TH_ERR_NOMEM, 0, "out of memory");
    const cJSON *it;
    size_t i = 0;
    cJSON_ArrayForEach(it, arr)
    {
        const char *name = th_json_string(it, "name", NULL);
        const char *pem = th_json_string(it, "certificate", NULL);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, "isVerified");
        th_result r = th_cacerts_put(fresh, name, pem, cJSON_IsTrue(v), NULL, 0, NULL, err);
        if (r != TH_OK) {
            th_cacerts_free(fresh);
            char m[sizeof err->message];
            snprintf(m, sizeof m, "%s", err ? err->message : "");
            return th_error_set(err, r, 0, "certificates[%zu]: %s", i, m);
        }
        struct cacert *c = &fresh->items[fresh->n - 1];
        c->created_us = (int64_t)th_json_number(it, "created", 0);
        c->updated_us = (int64_t)th_json_number(it, "updated", 0);
        c->etag_counter = (uint64_t)th_json_number(it, "etagCounter", 1);
        const char *code = th_json_string(it, "verificationCode", "");
        if (code && strlen(code) < sizeof c->code)
            snprintf(c->code, sizeof c->code, "%s", code);
        i++;
    }
    for (size_t k = 0; k < cas->n; k++)
        cacert_clear(&cas->items[k]);
    free(cas->items);
    *cas = *fresh;
    free(fresh);
    return TH_OK;
}
