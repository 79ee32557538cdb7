/*
 * x509_fixture.h - certificates for the X.509 tests (unit and integration),
 * made in memory with OpenSSL: a CA, a certificate it signs, a self-signed
 * one, with a chosen CN and validity. Header-only (static functions) so each
 * test executable takes what it uses.
 */
#ifndef TH_X509_FIXTURE_H
#define TH_X509_FIXTURE_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

struct fx_cert {
    X509 *x509;
    EVP_PKEY *key;
};

static inline void fx_free(struct fx_cert *c)
{
    X509_free(c->x509);
    EVP_PKEY_free(c->key);
    c->x509 = NULL;
    c->key = NULL;
}

static inline void fx_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
    if (ext) {
        X509_add_ext(cert, ext, -1);
        X509_EXTENSION_free(ext);
    }
}

/*
 * A certificate with subject CN `cn`, valid from now+from_s to now+to_s,
 * signed by `issuer` (NULL: self-signed), a CA when `ca`. Aborts on failure
 * (test code).
 */
static inline struct fx_cert fx_make(const char *cn, const struct fx_cert *issuer, bool ca,
                                     long from_s, long to_s)
{
    static long serial = 1;
    struct fx_cert c = {X509_new(), EVP_EC_gen("P-256")};
    X509_NAME *name = X509_NAME_new();
    if (!c.x509 || !c.key || !name)
        abort();
    X509_set_version(c.x509, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c.x509), serial++);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    X509_set_subject_name(c.x509, name);
    X509_set_issuer_name(c.x509, issuer ? X509_get_subject_name(issuer->x509) : name);
    X509_gmtime_adj(X509_getm_notBefore(c.x509), from_s);
    X509_gmtime_adj(X509_getm_notAfter(c.x509), to_s);
    X509_set_pubkey(c.x509, c.key);
    X509 *signer = issuer ? issuer->x509 : c.x509;
    fx_ext(c.x509, signer, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    fx_ext(c.x509, signer, NID_subject_key_identifier, "hash");
    if (issuer)
        fx_ext(c.x509, signer, NID_authority_key_identifier, "keyid:always");
    if (X509_sign(c.x509, issuer ? issuer->key : c.key, EVP_sha256()) <= 0)
        abort();
    X509_NAME_free(name);
    return c;
}

/* PEM text of the certificate (and, with key, its private key after it); caller frees. */
static inline char *fx_pem(const struct fx_cert *c, bool with_key)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, c->x509);
    if (with_key)
        PEM_write_bio_PrivateKey(b, c->key, NULL, NULL, 0, NULL, NULL);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *out = malloc((size_t)n + 1);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(b);
    return out;
}

/* The key's PEM; caller frees. */
static inline char *fx_key_pem(const struct fx_cert *c)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, c->key, NULL, NULL, 0, NULL, NULL);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *out = malloc((size_t)n + 1);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(b);
    return out;
}

/* DER bytes; *len set; caller frees with OPENSSL_free. */
static inline unsigned char *fx_der(const struct fx_cert *c, size_t *len)
{
    unsigned char *der = NULL;
    int n = i2d_X509(c->x509, &der);
    *len = n > 0 ? (size_t)n : 0;
    return der;
}

/* Upper-case SHA-1 (41) or SHA-256 (65) hex thumbprint. */
static inline void fx_thumb(const struct fx_cert *c, bool sha256, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    X509_digest(c->x509, sha256 ? EVP_sha256() : EVP_sha1(), md, &n);
    for (unsigned i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02X", md[i]);
}

/* Write text to a file; false on failure. */
static inline bool fx_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    bool ok = fputs(text, f) >= 0;
    return (fclose(f) == 0) && ok;
}

#endif
