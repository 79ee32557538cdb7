/*
 * x509.c - X.509 device authentication (x509.h): the front credential, thumbprints and the
 * decision on a certificate, over OpenSSL's in-memory X509 API.
 *
 * Sources (docs/protocol.md, "X.509 client certificates"): the IoT Hub articles
 * "Authenticate identities with X.509 certificates" (thumbprint and CA authentication; the
 * certificate's subject CN must match the device id) and "Tutorial: test certificate
 * authentication" (proof of possession).
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "cacert.h"
#include "util.h"
#include "x509.h"

struct th_x509_chain {
    X509 *certs[TH_X509_MAX_CHAIN];
    size_t n;
};

void th_x509_chain_free(struct th_x509_chain *chain)
{
    if (!chain)
        return;
    for (size_t i = 0; i < chain->n; i++)
        X509_free(chain->certs[i]);
    free(chain);
}

/* ---- the front credential ---------------------------------------------------------------- */

static size_t put_len(uint8_t *w, const void *p, size_t n)
{
    w[0] = (uint8_t)(n >> 24);
    w[1] = (uint8_t)(n >> 16);
    w[2] = (uint8_t)(n >> 8);
    w[3] = (uint8_t)n;
    if (n)
        memcpy(w + 4, p, n);
    return 4 + n;
}

/* HMAC-SHA256 over the length-prefixed client id, username and certificate text. */
static bool cred_mac(const uint8_t *secret, size_t secret_len, const void *cid, size_t cid_len,
                     const void *user, size_t user_len, const char *certs, size_t certs_len,
                     uint8_t mac[32])
{
    size_t total = 12 + cid_len + user_len + certs_len, w = 0;
    uint8_t *msg = malloc(total);
    unsigned n = 0;
    if (!msg)
        return false;
    w += put_len(msg + w, cid, cid_len);
    w += put_len(msg + w, user, user_len);
    w += put_len(msg + w, certs, certs_len);
    bool ok = HMAC(EVP_sha256(), secret, (int)secret_len, msg, w, mac, &n) != NULL && n == 32;
    free(msg);
    return ok;
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

th_result th_x509_cred_build(const uint8_t *secret, size_t secret_len, const uint8_t *client_id,
                             size_t client_id_len, const uint8_t *username, size_t username_len,
                             const struct th_x509_der *chain, size_t n, char *out, size_t cap,
                             size_t *out_len)
{
    if (!secret || !secret_len || !chain || n == 0)
        return TH_ERR_INVAL;
    if (n > TH_X509_MAX_CHAIN)
        n = TH_X509_MAX_CHAIN;
    size_t plen = strlen(TH_X509_CRED_PREFIX), need = plen + 64 + 1;
    for (size_t i = 0; i < n; i++)
        need += 4 * ((chain[i].len + 2) / 3) + 1;
    if (need > cap)
        return TH_ERR_BUFFER;
    char *certs = out + plen + 64 + 1, *w = certs;
    for (size_t i = 0; i < n; i++) {
        if (i)
            *w++ = '.';
        size_t room = (size_t)(out + cap - w);
        if (th_b64_encode(chain[i].ptr, chain[i].len, w, room) != TH_OK)
            return TH_ERR_BUFFER;
        w += strlen(w);
    }
    uint8_t mac[32];
    char machex[65];
    if (!cred_mac(secret, secret_len, client_id, client_id_len, username, username_len, certs,
                  (size_t)(w - certs), mac))
        return TH_ERR_NOMEM;
    hex(mac, 32, machex);
    memcpy(out, TH_X509_CRED_PREFIX, plen);
    memcpy(out + plen, machex, 64);
    out[plen + 64] = ' ';
    *out_len = (size_t)(w - out);
    return TH_OK;
}

bool th_x509_is_cred(const char *password)
{
    return password && strncmp(password, TH_X509_CRED_PREFIX, strlen(TH_X509_CRED_PREFIX)) == 0;
}

static th_result say(char *reason, size_t size, th_result r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static th_result say(char *reason, size_t size, th_result r, const char *fmt, ...)
{
    if (reason && size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(reason, size, fmt, ap);
        va_end(ap);
    }
    return r;
}

th_result th_x509_cred_open(const uint8_t *secret, size_t secret_len, const char *client_id,
                            const char *username, const char *password, struct th_x509_chain **out,
                            char *reason, size_t reason_size)
{
    *out = NULL;
    size_t plen = strlen(TH_X509_CRED_PREFIX);
    if (!th_x509_is_cred(password) || strlen(password) < plen + 66 || password[plen + 64] != ' ')
        return say(reason, reason_size, TH_ERR_FORMAT, "malformed X.509 front credential");
    const char *certs = password + plen + 65;
    size_t certs_len = strlen(certs);
    uint8_t mac[32];
    char machex[65];
    const char *cid = client_id ? client_id : "", *user = username ? username : "";
    if (!secret || !secret_len ||
        !cred_mac(secret, secret_len, cid, strlen(cid), user, strlen(user), certs, certs_len, mac))
        return say(reason, reason_size, TH_ERR_AUTH,
                   "an X.509 credential arrived but this hub has no front secret");
    hex(mac, 32, machex);
    if (CRYPTO_memcmp(machex, password + plen, 64) != 0)
        return say(reason, reason_size, TH_ERR_AUTH,
                   "the X.509 credential was not made by this hub's TLS front for this client "
                   "id and username");
    struct th_x509_chain *ch = calloc(1, sizeof *ch);
    if (!ch)
        return TH_ERR_NOMEM;
    const char *p = certs, *end = certs + certs_len;
    while (p < end && ch->n < TH_X509_MAX_CHAIN) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
        size_t cap = n / 4 * 3 + 3, dlen = 0;
        uint8_t *der = malloc(cap);
        const uint8_t *q = der;
        X509 *x = NULL;
        if (der && th_b64_decode(p, n, der, cap, &dlen) == TH_OK)
            x = d2i_X509(NULL, &q, (long)dlen);
        free(der);
        if (!x) {
            size_t which = ch->n + 1;
            th_x509_chain_free(ch);
            return say(reason, reason_size, TH_ERR_FORMAT,
                       "the client's certificate %zu cannot be read", which);
        }
        ch->certs[ch->n++] = x;
        p = dot ? dot + 1 : end;
    }
    if (ch->n == 0) {
        th_x509_chain_free(ch);
        return say(reason, reason_size, TH_ERR_FORMAT, "the X.509 credential holds no certificate");
    }
    *out = ch;
    return TH_OK;
}

struct th_x509_chain *th_x509_chain_from_pem(const char *pem, size_t len)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    struct th_x509_chain *ch = b ? calloc(1, sizeof *ch) : NULL;
    X509 *x;
    while (ch && ch->n < TH_X509_MAX_CHAIN && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)))
        ch->certs[ch->n++] = x;
    BIO_free(b);
    if (ch && ch->n == 0) {
        free(ch);
        ch = NULL;
    }
    return ch;
}

/* ---- thumbprints -------------------------------------------------------------------------- */

static void thumbprints(const X509 *x, char sha1[41], char sha256[TH_X509_THUMB_BUF])
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (X509_digest(x, EVP_sha1(), md, &n) == 1 && n == 20)
        hex(md, 20, sha1);
    else
        sha1[0] = '\0';
    if (X509_digest(x, EVP_sha256(), md, &n) == 1 && n == 32)
        hex(md, 32, sha256);
    else
        sha256[0] = '\0';
}

size_t th_x509_chain_count(const struct th_x509_chain *chain)
{
    return chain ? chain->n : 0;
}

const void *th_x509_chain_at(const struct th_x509_chain *chain, size_t i)
{
    return chain && i < chain->n ? chain->certs[i] : NULL;
}

void th_x509_chain_thumbprints(const struct th_x509_chain *chain, char sha1[41],
                               char sha256[TH_X509_THUMB_BUF])
{
    thumbprints(chain->certs[0], sha1, sha256);
}

th_result th_x509_pem_thumbprints(const char *pem, size_t len, char sha1[41],
                                  char sha256[TH_X509_THUMB_BUF])
{
    struct th_x509_chain *ch = th_x509_chain_from_pem(pem, len);
    if (!ch)
        return TH_ERR_FORMAT;
    thumbprints(ch->certs[0], sha1, sha256);
    th_x509_chain_free(ch);
    return TH_OK;
}

bool th_x509_thumbprint_valid(const char *tp)
{
    size_t n = tp ? strlen(tp) : 0;
    if (n != 40 && n != 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (th_hex_value(tp[i]) < 0)
            return false;
    return true;
}

bool th_x509_thumbprint_matches(const char *tp, const char *sha1, const char *sha256)
{
    if (!th_x509_thumbprint_valid(tp))
        return false;
    const char *want = strlen(tp) == 40 ? sha1 : sha256;
    return want && want[0] && strcasecmp(tp, want) == 0;
}

/* ---- the decision ------------------------------------------------------------------------- */

/* The subject CN of `x` into buf; false when it has none. */
static bool subject_cn(const X509 *x, char *buf, size_t size)
{
    X509_NAME *nm = X509_get_subject_name(x);
    int i = nm ? X509_NAME_get_index_by_NID(nm, NID_commonName, -1) : -1;
    if (i < 0)
        return false;
    ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(nm, i));
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, s);
    if (n < 0)
        return false;
    snprintf(buf, size, "%.*s", n, (const char *)utf8);
    OPENSSL_free(utf8);
    return true;
}

static th_result check_validity(const X509 *leaf, int64_t now_s, char *reason, size_t size)
{
    time_t now = (time_t)now_s;
    if (X509_cmp_time(X509_get0_notBefore(leaf), &now) > 0)
        return say(reason, size, TH_ERR_AUTH,
                   "the client certificate is not valid yet (notBefore is in the future)");
    if (X509_cmp_time(X509_get0_notAfter(leaf), &now) < 0)
        return say(reason, size, TH_ERR_AUTH,
                   "the client certificate has expired; issue a new one and register it");
    return TH_OK;
}

/* Verify the chain against the verified CAs of `cas` (a registered intermediate is an anchor). */
static th_result check_chain(const struct th_x509_chain *chain, const struct th_cacerts *cas,
                             int64_t now_s, char *reason, size_t size)
{
    X509_STORE *store = X509_STORE_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    size_t verified = 0;
    th_result r = TH_ERR_NOMEM;
    if (!store || !untrusted || !ctx)
        goto out;
    for (size_t i = 0;; i++) {
        const char *name;
        bool ok;
        const X509 *ca = th_cacerts_x509_at(cas, i, &name, &ok);
        if (!ca)
            break;
        if (ok && X509_STORE_add_cert(store, (X509 *)ca) == 1)
            verified++;
    }
    for (size_t i = 1; i < chain->n; i++)
        if (!sk_X509_push(untrusted, chain->certs[i]))
            goto out;
    if (X509_STORE_CTX_init(ctx, store, chain->certs[0], untrusted) != 1)
        goto out;
    X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_time(vp, (time_t)now_s);
    X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_PARTIAL_CHAIN);
    if (X509_verify_cert(ctx) == 1) {
        r = TH_OK;
        goto out;
    }
    int e = X509_STORE_CTX_get_error(ctx);
    r = TH_ERR_AUTH;
    /* Name an unverified CA that would have signed it: the usual mistake. */
    for (size_t i = 0;; i++) {
        const char *name;
        bool ok;
        const X509 *ca = th_cacerts_x509_at(cas, i, &name, &ok);
        if (!ca)
            break;
        if (ok)
            continue;
        for (size_t j = 0; j < chain->n; j++) {
            if (X509_check_issued((X509 *)ca, chain->certs[j]) == X509_V_OK) {
                say(reason, size, TH_ERR_AUTH,
                    "the client certificate chains to CA certificate '%s', which is not "
                    "verified; verify it (proof of possession) or upload it as verified",
                    name);
                goto out;
            }
        }
    }
    say(reason, size, TH_ERR_AUTH,
        "the client certificate does not chain to a verified CA certificate of this hub (%s; "
        "%zu verified CA certificate%s)",
        X509_verify_cert_error_string(e), verified, verified == 1 ? "" : "s");
out:
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
    X509_STORE_free(store);
    return r;
}

th_result th_x509_authenticate(const struct th_x509_chain *chain, const struct th_x509_identity *id,
                               const struct th_cacerts *cas, int64_t now_s, char *reason,
                               size_t reason_size)
{
    if (!chain || !chain->n || !id || !id->device_id)
        return say(reason, reason_size, TH_ERR_AUTH, "no client certificate to decide on");
    th_result r = check_validity(chain->certs[0], now_s, reason, reason_size);
    if (r != TH_OK)
        return r;
    if (!id->ca) {
        char sha1[41], sha256[TH_X509_THUMB_BUF];
        thumbprints(chain->certs[0], sha1, sha256);
        if (th_x509_thumbprint_matches(id->primary_thumbprint, sha1, sha256) ||
            th_x509_thumbprint_matches(id->secondary_thumbprint, sha1, sha256))
            return TH_OK;
        return say(reason, reason_size, TH_ERR_AUTH,
                   "the client certificate's thumbprint (SHA-1 %s, SHA-256 %s) is neither the "
                   "primary nor the secondary thumbprint registered for '%s%s%s'",
                   sha1, sha256, id->device_id, id->module_id ? "/" : "",
                   id->module_id ? id->module_id : "");
    }
    /* A module's CN is "{deviceId}/{moduleId}", its identity name (docs/protocol.md). */
    char cn[600], want[2 * 128 + 2];
    snprintf(want, sizeof want, "%s%s%s", id->device_id, id->module_id ? "/" : "",
             id->module_id ? id->module_id : "");
    const char *what = id->module_id ? "module identity name" : "device id";
    if (!subject_cn(chain->certs[0], cn, sizeof cn))
        return say(reason, reason_size, TH_ERR_AUTH,
                   "the client certificate has no subject CN; a CA-signed certificate's CN must "
                   "be the %s '%s'",
                   what, want);
    if (strcmp(cn, want) != 0)
        return say(reason, reason_size, TH_ERR_AUTH,
                   "the client certificate's subject CN '%s' is not the %s '%s'", cn, what, want);
    return cas ? check_chain(chain, cas, now_s, reason, reason_size)
               : say(reason, reason_size, TH_ERR_AUTH, "this hub has no CA certificates");
}
