/*
 * certs.c - the development CA and the broker's TLS server certificate for
 * `twinhub serve` (real-clients.md sections 0 and 7: every device SDK checks
 * the certificate against the host it dials, and each needs to be told to
 * trust our CA).
 *
 * The cert directory holds ca.pem/ca.key (self-signed, 10 years) and
 * server.pem/server.key (signed by the CA, 2 years, SANs localhost,
 * 127.0.0.1, ::1 plus the hub name and any specific bind address). A hub
 * bound to an address of its own (`twinhub run` gives each scenario's hub
 * one, 127.x.y.z) gets server-<address>.pem/.key instead, so that hubs on
 * different addresses sharing the directory do not re-issue each other's. Keys are
 * EC P-256, signatures SHA-256, all through the OpenSSL 3 C API. Files are
 * written to a temporary name and renamed, keys with mode 0600, so a crash
 * never leaves a half-written file behind. The CA is kept as long as it is
 * usable, because users have pointed their clients at it; the server
 * certificate is cheap and is re-issued whenever it no longer fits.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cli.h"
#include "th_file.h"

#define CA_CN "twinhub development CA"
#define CA_DAYS (10 * 365 + 2)
#define SERVER_DAYS (2 * 365)
#define RENEW_BEFORE_S (30L * 24 * 3600)
/* Backdate notBefore a little so clients with a slightly slow clock accept a fresh cert. */
#define BACKDATE_S 3600L
/* SANs every server certificate carries, whatever the options. */
static const char *const base_names[] = {"localhost", "127.0.0.1", "::1"};

/* Print the OpenSSL error queue after `what`, on one line, and clear it. */
static void ssl_fail(const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    fprintf(stderr, "twinhub: %s%s%s\n", what, e ? ": " : "", buf);
    ERR_clear_error();
}

static bool is_ip_literal(const char *s)
{
    unsigned char tmp[16];
    return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

/* A DNS name we are willing to put in a SAN (also keeps the extension text unambiguous). */
static bool is_dns_name(const char *s)
{
    if (!*s || strlen(s) > 253)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.'))
            return false;
    }
    return true;
}

/* Whether two SAN entries name the same thing (IP literals compared as addresses). */
static bool same_name(const char *a, const char *b)
{
    unsigned char x[16], y[16];
    if (inet_pton(AF_INET, a, x) == 1 && inet_pton(AF_INET, b, y) == 1)
        return memcmp(x, y, 4) == 0;
    if (inet_pton(AF_INET6, a, x) == 1 && inet_pton(AF_INET6, b, y) == 1)
        return memcmp(x, y, 16) == 0;
    return strcasecmp(a, b) == 0;
}

/*
 * Create `dir` and any missing parents with mode 0700 (the XDG base directory
 * rule). Existing directories are left as they are.
 */
static bool mkdir_p(const char *dir)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return false;
    for (char *p = path + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(path, 0700) != 0 && errno != EEXIST) {
                fprintf(stderr, "twinhub: cannot create %s: %s; pass --cert-dir DIR\n", path,
                        strerror(errno));
                return false;
            }
            *p = saved;
            if (saved == '\0')
                break;
        }
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "twinhub: %s is not a directory; pass --cert-dir DIR\n", dir);
        return false;
    }
    return true;
}

static X509 *load_cert(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    ERR_clear_error();
    return x;
}

/* Loads a private key; an existing key file readable by others is tightened to 0600. */
static EVP_PKEY *load_key(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
        (void)fchmod(fileno(f), 0600);
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    ERR_clear_error();
    return k;
}

struct pem {
    X509 *cert;
    EVP_PKEY *key;
};

static bool put_pem(FILE *f, void *arg)
{
    const struct pem *p = arg;
    return (p->cert ? PEM_write_X509(f, p->cert)
                    : PEM_write_PrivateKey(f, p->key, NULL, NULL, 0, NULL, NULL)) == 1;
}

/*
 * Write a PEM object to `path` atomically and durably (th_file_replace): a
 * crash leaves the old file or the new one. Exactly one of `cert` and `key`
 * is non-NULL. Prints the error on failure.
 */
static bool write_pem(const char *path, mode_t mode, X509 *cert, EVP_PKEY *key)
{
    struct pem p = {cert, key};
    switch (th_file_replace(path, mode, true, put_pem, &p)) {
    case TH_FILE_DONE:
        return true;
    case TH_FILE_NAME:
        fprintf(stderr, "twinhub: path too long: %s\n", path);
        return false;
    case TH_FILE_CREATE:
        fprintf(stderr, "twinhub: cannot write %s: %s; pass --cert-dir DIR\n", path,
                strerror(errno));
        return false;
    case TH_FILE_FILL:
        ssl_fail("cannot encode a PEM file");
        return false;
    case TH_FILE_WRITE:
        break;
    }
    fprintf(stderr, "twinhub: cannot write %s: %s\n", path, strerror(errno));
    return false;
}

bool th_certs_add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
    if (!ext)
        return false;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1;
}

/* A positive random 159-bit serial number, as CAs are expected to use. */
static bool set_random_serial(X509 *cert)
{
    BIGNUM *bn = BN_new();
    bool ok = false;
    if (bn && BN_rand(bn, 159, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) == 1) {
        ASN1_INTEGER *serial = BN_to_ASN1_INTEGER(bn, NULL);
        if (serial) {
            ok = X509_set_serialNumber(cert, serial) == 1;
            ASN1_INTEGER_free(serial);
        }
    }
    BN_free(bn);
    return ok;
}

/*
 * Build and sign a certificate for `key`. With `issuer` NULL it is the
 * self-signed CA; otherwise a server certificate signed by issuer/issuer_key
 * whose SAN extension is `san` (openssl.cnf syntax). Caller frees with
 * X509_free; NULL on failure (OpenSSL error queue set).
 */
static X509 *make_cert(EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, const char *cn, long days,
                       const char *san)
{
    X509 *cert = X509_new();
    X509_NAME *name = X509_NAME_new();
    bool ok = cert && name && X509_set_version(cert, 2) == 1 && set_random_serial(cert) &&
              X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"twinhub",
                                         -1, -1, 0) == 1 &&
              X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
                                         -1, 0) == 1 &&
              X509_set_subject_name(cert, name) == 1 &&
              X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : name) == 1 &&
              X509_gmtime_adj(X509_getm_notBefore(cert), -BACKDATE_S) &&
              X509_time_adj_ex(X509_getm_notAfter(cert), (int)days, 0, NULL) &&
              X509_set_pubkey(cert, key) == 1;
    X509 *signer = issuer ? issuer : cert;
    if (ok && !issuer) {
        ok = th_certs_add_ext(cert, signer, NID_basic_constraints, "critical,CA:TRUE") &&
             th_certs_add_ext(cert, signer, NID_key_usage, "critical,keyCertSign,cRLSign") &&
             th_certs_add_ext(cert, signer, NID_subject_key_identifier, "hash");
    } else if (ok) {
        ok = th_certs_add_ext(cert, signer, NID_basic_constraints, "critical,CA:FALSE") &&
             th_certs_add_ext(cert, signer, NID_key_usage, "critical,digitalSignature") &&
             th_certs_add_ext(cert, signer, NID_ext_key_usage, "serverAuth") &&
             th_certs_add_ext(cert, signer, NID_subject_alt_name, san) &&
             th_certs_add_ext(cert, signer, NID_subject_key_identifier, "hash") &&
             th_certs_add_ext(cert, signer, NID_authority_key_identifier, "keyid:always");
    }
    if (ok)
        ok = X509_sign(cert, issuer ? issuer_key : key, EVP_sha256()) > 0;
    X509_NAME_free(name);
    if (!ok) {
        X509_free(cert);
        return NULL;
    }
    return cert;
}

/* True when `t` is at or before now + `ahead_s` (expired, or expiring soon). */
static bool ends_within(const ASN1_TIME *t, long ahead_s)
{
    time_t limit = time(NULL) + ahead_s;
    return X509_cmp_time(t, &limit) <= 0; /* 0 means unparsable: treat as expired */
}

static bool starts_in_future(const ASN1_TIME *t)
{
    time_t now = time(NULL);
    return X509_cmp_time(t, &now) >= 0;
}

/*
 * Why the CA pair cannot be used, or NULL when it can. A CA must match its
 * key, be a CA, be self-signed and stay valid for more than RENEW_BEFORE_S.
 */
static const char *ca_problem(X509 *ca, EVP_PKEY *key)
{
    if (!ca)
        return "ca.pem is missing or not a PEM certificate";
    if (!key)
        return "ca.key is missing or not a PEM private key";
    if (X509_check_private_key(ca, key) != 1)
        return "ca.key does not belong to ca.pem";
    if (X509_check_ca(ca) < 1)
        return "ca.pem is not a CA certificate";
    if (X509_verify(ca, key) != 1)
        return "ca.pem is not self-signed";
    if (ends_within(X509_get0_notAfter(ca), RENEW_BEFORE_S))
        return "the CA expires within 30 days";
    return NULL;
}

/* Why the server pair must be re-issued, or NULL when it still fits; may use `buf`. */
static const char *server_problem(X509 *cert, EVP_PKEY *key, EVP_PKEY *ca_key,
                                  const char *const *names, size_t n, char *buf, size_t size)
{
    if (!cert || !key)
        return "missing";
    if (X509_check_private_key(cert, key) != 1)
        return "its key does not match";
    if (X509_verify(cert, ca_key) != 1)
        return "it was not signed by the current CA";
    if (ends_within(X509_get0_notAfter(cert), RENEW_BEFORE_S))
        return "it expires within 30 days";
    if (starts_in_future(X509_get0_notBefore(cert)))
        return "it is not valid yet";
    for (size_t i = 0; i < n; i++) {
        int r = is_ip_literal(names[i])
                    ? X509_check_ip_asc(cert, names[i], 0)
                    : X509_check_host(cert, names[i], 0, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, NULL);
        if (r != 1) {
            ERR_clear_error();
            snprintf(buf, size, "it lacks the name %s", names[i]);
            return buf;
        }
    }
    ERR_clear_error();
    return NULL;
}

/* "DNS:a,IP:b,..." for the SAN extension; false when it does not fit. */
static bool san_text(const char *const *names, size_t n, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(buf + used, size - used, "%s%s:%s", used ? "," : "",
                         is_ip_literal(names[i]) ? "IP" : "DNS", names[i]);
        if (w < 0 || (size_t)w >= size - used)
            return false;
        used += (size_t)w;
    }
    return true;
}

static bool join(char *out, const char *dir, const char *file)
{
    return snprintf(out, PATH_MAX, "%s/%s", dir, file) < PATH_MAX;
}

bool th_certs_default_dir(char *buf, size_t size)
{
    const char *xdg = getenv("XDG_DATA_HOME");
    int w;
    if (xdg && xdg[0] == '/') {
        w = snprintf(buf, size, "%s/twinhub", xdg);
    } else {
        const char *home = getenv("HOME");
        if (!home || home[0] != '/') {
            fprintf(stderr, "twinhub: HOME is not set, so there is no default cert directory; "
                            "pass --cert-dir DIR\n");
            return false;
        }
        w = snprintf(buf, size, "%s/.local/share/twinhub", home);
    }
    if (w < 0 || (size_t)w >= size) {
        fprintf(stderr,
                "twinhub: the default cert directory path is too long; pass --cert-dir DIR\n");
        return false;
    }
    return true;
}

/* "server" or "server-<variant>" (a host name or an IP literal: safe in a file name). */
static bool server_stem(const char *variant, char *buf, size_t size)
{
    bool base = false;
    for (size_t i = 0; variant && i < sizeof base_names / sizeof base_names[0]; i++)
        base = base || same_name(variant, base_names[i]);
    if (!variant || !variant[0] || base)
        return snprintf(buf, size, "server") < (int)size;
    if (!is_ip_literal(variant) && !is_dns_name(variant))
        return false;
    return snprintf(buf, size, "server-%s", variant) < (int)size;
}

bool th_certs_ensure(const char *dir, const char *const *names, size_t nnames,
                     const char *variant, bool verbose, struct th_cert_files *out)
{
    /* The full SAN list: base names, then the caller's, without duplicates. */
    const char *all[16];
    size_t nall = 0;
    for (size_t i = 0; i < sizeof base_names / sizeof base_names[0]; i++)
        all[nall++] = base_names[i];
    for (size_t i = 0; i < nnames; i++) {
        if (!is_ip_literal(names[i]) && !is_dns_name(names[i])) {
            fprintf(stderr,
                    "twinhub: '%s' cannot be put in a certificate (use letters, digits, "
                    "'-' and '.', or an IP address)\n",
                    names[i]);
            return false;
        }
        bool dup = false;
        for (size_t j = 0; j < nall && !dup; j++)
            dup = same_name(all[j], names[i]);
        if (!dup && nall < sizeof all / sizeof all[0])
            all[nall++] = names[i];
    }

    char stem[300], cert_name[320], key_name[320];
    if (!server_stem(variant, stem, sizeof stem)) {
        fprintf(stderr, "twinhub: '%s' cannot name a certificate file\n", variant);
        return false;
    }
    snprintf(cert_name, sizeof cert_name, "%s.pem", stem);
    snprintf(key_name, sizeof key_name, "%s.key", stem);
    if (!mkdir_p(dir))
        return false;
    if (!join(out->ca_cert, dir, "ca.pem") || !join(out->ca_key, dir, "ca.key") ||
        !join(out->server_cert, dir, cert_name) || !join(out->server_key, dir, key_name)) {
        fprintf(stderr, "twinhub: cert directory path too long: %s\n", dir);
        return false;
    }

    /* Two `serve` processes starting at once must not mint two different CAs. */
    char lock_path[PATH_MAX];
    if (!join(lock_path, dir, ".lock")) {
        fprintf(stderr, "twinhub: cert directory path too long: %s\n", dir);
        return false;
    }
    int lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd < 0) {
        fprintf(stderr, "twinhub: cannot write in %s: %s; pass --cert-dir DIR\n", dir,
                strerror(errno));
        return false;
    }
    while (flock(lock_fd, LOCK_EX) != 0 && errno == EINTR)
        ;

    bool ok = false;
    X509 *ca = load_cert(out->ca_cert), *server = NULL;
    EVP_PKEY *ca_key = load_key(out->ca_key), *server_key = NULL;
    bool had_ca = ca || ca_key;
    const char *why = ca_problem(ca, ca_key);
    if (why) {
        X509_free(ca);
        EVP_PKEY_free(ca_key);
        ca = NULL;
        ca_key = EVP_EC_gen("P-256");
        if (!ca_key) {
            ssl_fail("cannot generate the CA key");
            goto done;
        }
        ca = make_cert(ca_key, NULL, NULL, CA_CN, CA_DAYS, NULL);
        if (!ca) {
            ssl_fail("cannot create the development CA");
            goto done;
        }
        if (!write_pem(out->ca_key, 0600, NULL, ca_key) || !write_pem(out->ca_cert, 0644, ca, NULL))
            goto done;
        if (had_ca)
            fprintf(stderr,
                    "twinhub: warning: %s in %s; created a new development CA. "
                    "Clients that trusted the old ca.pem must load the new one.\n",
                    why, dir);
        else if (verbose)
            fprintf(stderr, "twinhub: created the development CA %s\n", out->ca_cert);
    }

    server = load_cert(out->server_cert);
    server_key = load_key(out->server_key);
    char why_buf[320];
    why = server_problem(server, server_key, ca_key, all, nall, why_buf, sizeof why_buf);
    if (why) {
        char san[2048];
        if (!san_text(all, nall, san, sizeof san)) {
            fprintf(stderr, "twinhub: too many or too long certificate names\n");
            goto done;
        }
        X509_free(server);
        EVP_PKEY_free(server_key);
        server = NULL;
        server_key = EVP_EC_gen("P-256");
        if (!server_key) {
            ssl_fail("cannot generate the server key");
            goto done;
        }
        /* CN is informational only (clients match the SANs): the caller's first name. */
        const char *cn = nnames > 0 && strlen(names[0]) <= 64 ? names[0] : "localhost";
        server = make_cert(server_key, ca, ca_key, cn, SERVER_DAYS, san);
        if (!server) {
            ssl_fail("cannot create the server certificate");
            goto done;
        }
        if (!write_pem(out->server_key, 0600, NULL, server_key) ||
            !write_pem(out->server_cert, 0644, server, NULL))
            goto done;
        if (verbose)
            fprintf(stderr, "twinhub: issued %s (%s; SANs %s)\n", out->server_cert,
                    strcmp(why, "missing") ? why : "first use", san);
    }
    ok = true;

done:
    X509_free(ca);
    X509_free(server);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(server_key);
    close(lock_fd); /* releases the lock */
    return ok;
}
