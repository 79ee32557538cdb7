/*
 * x509_cli.c - X.509 in the CLI (docs/cli.md): device certificates the
 * development CA issues for `twinhub device create ID --x509`, thumbprints
 * of a certificate file, and `twinhub cert`: the hub's CA certificates
 * (list, show, upload, delete, verify by proof of possession) through the
 * control API (docs/control-api.md, "CA certificates").
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cli.h"
#include "client.h"
#include "x509.h"
#include "x509_cli.h"

#define DEVICE_CERT_DAYS 365
#define BACKDATE_S 300 /* clocks of devices and hub may differ a little */
#define MAX_PEM_FILE (256 * 1024)

static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    char *buf = malloc(MAX_PEM_FILE + 1);
    size_t n = buf ? fread(buf, 1, MAX_PEM_FILE, f) : 0;
    fclose(f);
    if (!buf)
        return NULL;
    buf[n] = '\0';
    *len = n;
    return buf;
}

bool th_x509_file_thumbprint(const char *path, char sha256[65], char *err, size_t errsize)
{
    size_t len = 0;
    char *text = read_text(path, &len), sha1[41];
    if (!text) {
        snprintf(err, errsize, "cannot read %s: %s", path, strerror(errno));
        return false;
    }
    bool ok = th_x509_pem_thumbprints(text, len, sha1, sha256) == TH_OK;
    free(text);
    if (!ok)
        snprintf(err, errsize, "%s holds no PEM certificate", path);
    return ok;
}

/* A client certificate for `key` with subject CN `cn`, signed by issuer/issuer_key. */
static X509 *client_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                         long days)
{
    X509 *cert = X509_new();
    X509_NAME *name = X509_NAME_new();
    BIGNUM *bn = BN_new();
    ASN1_INTEGER *serial = NULL;
    bool ok = cert && name && bn && BN_rand(bn, 159, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) == 1 &&
              (serial = BN_to_ASN1_INTEGER(bn, NULL)) && X509_set_version(cert, 2) == 1 &&
              X509_set_serialNumber(cert, serial) == 1 &&
              X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
                                         -1, 0) == 1 &&
              X509_set_subject_name(cert, name) == 1 &&
              X509_set_issuer_name(cert, X509_get_subject_name(issuer)) == 1 &&
              X509_gmtime_adj(X509_getm_notBefore(cert), -BACKDATE_S) &&
              X509_time_adj_ex(X509_getm_notAfter(cert), (int)days, 0, NULL) &&
              X509_set_pubkey(cert, key) == 1 &&
              th_certs_add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE") &&
              th_certs_add_ext(cert, issuer, NID_key_usage, "critical,digitalSignature") &&
              th_certs_add_ext(cert, issuer, NID_ext_key_usage, "clientAuth") &&
              th_certs_add_ext(cert, issuer, NID_authority_key_identifier, "keyid:always") &&
              X509_sign(cert, issuer_key, EVP_sha256()) > 0;
    ASN1_INTEGER_free(serial);
    BN_free(bn);
    X509_NAME_free(name);
    if (!ok) {
        X509_free(cert);
        return NULL;
    }
    return cert;
}

static X509 *load_cert(const char *path)
{
    FILE *f = fopen(path, "re");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    return x;
}

static EVP_PKEY *load_key(const char *path)
{
    FILE *f = fopen(path, "re");
    EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    return k;
}

static bool write_pem(const char *path, mode_t mode, X509 *cert, EVP_PKEY *key)
{
    FILE *f = fopen(path, "we");
    if (!f)
        return false;
    (void)fchmod(fileno(f), mode);
    bool ok = cert ? PEM_write_X509(f, cert) == 1
                   : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1;
    return (fclose(f) == 0) && ok;
}

bool th_x509_issue_device(const char *cert_dir, const char *device_id, char *cert_path,
                          char *key_path, size_t path_size, char sha256[65], char *err,
                          size_t errsize)
{
    char ca_cert[PATH_MAX], ca_key[PATH_MAX], dir[PATH_MAX];
    snprintf(ca_cert, sizeof ca_cert, "%s/ca.pem", cert_dir);
    snprintf(ca_key, sizeof ca_key, "%s/ca.key", cert_dir);
    snprintf(dir, sizeof dir, "%s/devices", cert_dir);
    /* A file name from the id: characters other than [A-Za-z0-9._-] as %XX. */
    char name[3 * 128 + 1];
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)device_id; *p && n + 4 < sizeof name;
         p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || (*p == '.' && p != (const unsigned char *)device_id))
            name[n++] = (char)*p;
        else
            n += (size_t)snprintf(name + n, sizeof name - n, "%%%02X", *p);
    }
    name[n] = '\0';
    if (snprintf(cert_path, path_size, "%s/%s.pem", dir, name) >= (int)path_size ||
        snprintf(key_path, path_size, "%s/%s.key", dir, name) >= (int)path_size) {
        snprintf(err, errsize, "the certificate path under %s is too long", dir);
        return false;
    }
    X509 *ca = load_cert(ca_cert), *cert = NULL;
    EVP_PKEY *cakey = load_key(ca_key), *key = NULL;
    bool ok = false;
    if (!ca || !cakey) {
        snprintf(err, errsize,
                 "cannot read the development CA (%s, %s); run `twinhub serve` once to create "
                 "it, or pass --cert-dir",
                 ca_cert, ca_key);
    } else if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errsize, "cannot create %s: %s", dir, strerror(errno));
    } else if (!(key = EVP_EC_gen("P-256")) ||
               !(cert = client_cert(key, device_id, ca, cakey, DEVICE_CERT_DAYS))) {
        snprintf(err, errsize, "cannot issue a certificate for '%s'", device_id);
    } else if (!write_pem(key_path, 0600, NULL, key) || !write_pem(cert_path, 0644, cert, NULL)) {
        snprintf(err, errsize, "cannot write %s: %s", cert_path, strerror(errno));
    } else {
        uint8_t md[EVP_MAX_MD_SIZE];
        unsigned mdn = 0;
        ok = X509_digest(cert, EVP_sha256(), md, &mdn) == 1;
        for (unsigned i = 0; ok && i < mdn; i++)
            snprintf(sha256 + 2 * i, 3, "%02X", md[i]);
    }
    ERR_clear_error();
    X509_free(cert);
    X509_free(ca);
    EVP_PKEY_free(key);
    EVP_PKEY_free(cakey);
    return ok;
}

/* ---- twinhub cert ----------------------------------------------------------------------- */

static void human_cert(const cJSON *data, const void *ctx)
{
    (void)ctx;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(data, "properties");
    printf("  %-14s %s\n", "name", th_str(data, "name", "?"));
    printf("  %-14s %s\n", "subject", th_str(p, "subject", "?"));
    printf("  %-14s %s\n", "thumbprint", th_str(p, "thumbprint", "?"));
    printf("  %-14s %s\n", "expiry", th_str(p, "expiry", "?"));
    printf("  %-14s %s\n", "verified",
           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "isVerified")) ? "yes" : "no");
    printf("  %-14s %s\n", "etag", th_str(data, "etag", "?"));
    if (th_str(p, "verificationCode", NULL))
        printf("  %-14s %s\n", "verification code", th_str(p, "verificationCode", ""));
}

static void human_cert_list(const cJSON *data, const void *ctx)
{
    (void)ctx;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(data, "value"), *c;
    if (!cJSON_GetArraySize(arr)) {
        printf("no CA certificates\n");
        return;
    }
    printf("%-24s %-9s %-30s %s\n", "NAME", "VERIFIED", "EXPIRY", "SUBJECT");
    cJSON_ArrayForEach(c, arr)
    {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(c, "properties");
        printf("%-24s %-9s %-30s %s\n", th_str(c, "name", "?"),
               cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "isVerified")) ? "yes" : "no",
               th_str(p, "expiry", "?"), th_str(p, "subject", "?"));
    }
}

static void human_deleted(const cJSON *data, const void *ctx)
{
    (void)data;
    printf("deleted CA certificate %s\n", (const char *)ctx);
}

static cJSON *cert_cmd(const char *command, const char *name)
{
    cJSON *cmd = th_command_new(command);
    if (cmd && name && !cJSON_AddStringToObject(cmd, "name", name)) {
        cJSON_Delete(cmd);
        return NULL;
    }
    return cmd;
}

static int cert_list(const struct th_args *a, const char *const *args, int nargs)
{
    (void)args;
    (void)nargs;
    cJSON *data;
    int rc = th_call_once(a, cert_cmd("listCertificates", NULL), &data, NULL);
    return th_finish(a, rc, data, human_cert_list, NULL);
}

static int cert_show(const struct th_args *a, const char *const *args, int nargs)
{
    (void)nargs;
    cJSON *data;
    int rc = th_call_once(a, cert_cmd("getCertificate", args[0]), &data, NULL);
    return th_finish(a, rc, data, human_cert, NULL);
}

static int cert_upload(const struct th_args *a, const char *const *args, int nargs)
{
    (void)nargs;
    size_t len = 0;
    char *pem = read_text(args[1], &len);
    if (!pem)
        return th_usage_error(a, "cannot read %s: %s", args[1], strerror(errno));
    cJSON *cmd = cert_cmd("putCertificate", args[0]), *data;
    const char *etag = th_args_get(a, "etag");
    if (!cmd || !cJSON_AddStringToObject(cmd, "certificate", pem) ||
        !cJSON_AddBoolToObject(cmd, "isVerified", th_args_has(a, "verified")) ||
        (etag && !cJSON_AddStringToObject(cmd, "ifMatch", etag))) {
        cJSON_Delete(cmd);
        free(pem);
        return th_oom();
    }
    free(pem);
    int rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, human_cert, NULL);
}

static int cert_delete(const struct th_args *a, const char *const *args, int nargs)
{
    (void)nargs;
    const char *etag = th_args_get(a, "etag");
    cJSON *cmd = cert_cmd("deleteCertificate", args[0]), *data;
    if (!cmd || !cJSON_AddStringToObject(cmd, "ifMatch", etag ? etag : "*")) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    int rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, human_deleted, args[0]);
}

/* The verification certificate: CN = code, signed with the CA's key, in PEM; caller frees. */
static char *proof_pem(const char *ca_pem, const char *ca_key_file, const char *code, char *err,
                       size_t errsize)
{
    BIO *in = BIO_new_mem_buf(ca_pem, -1), *out = BIO_new(BIO_s_mem());
    X509 *ca = in ? PEM_read_bio_X509(in, NULL, NULL, NULL) : NULL, *proof = NULL;
    EVP_PKEY *cakey = load_key(ca_key_file), *key = EVP_EC_gen("P-256");
    char *text = NULL;
    if (!ca || !cakey || !key || !out) {
        snprintf(err, errsize, "cannot read the private key %s", ca_key_file);
    } else if (X509_check_private_key(ca, cakey) != 1) {
        snprintf(err, errsize, "%s is not the private key of this CA certificate", ca_key_file);
    } else if (!(proof = client_cert(key, code, ca, cakey, 1)) ||
               PEM_write_bio_X509(out, proof) != 1) {
        snprintf(err, errsize, "cannot sign the verification certificate");
    } else {
        char *p;
        long n = BIO_get_mem_data(out, &p);
        if ((text = malloc((size_t)n + 1))) {
            memcpy(text, p, (size_t)n);
            text[n] = '\0';
        }
    }
    ERR_clear_error();
    X509_free(proof);
    X509_free(ca);
    EVP_PKEY_free(cakey);
    EVP_PKEY_free(key);
    BIO_free(in);
    BIO_free(out);
    return text;
}

/*
 * verify NAME --proof FILE: send a verification certificate made elsewhere (after `cert code`);
 * verify NAME --ca-key FILE: ask for a code, sign the proof with the CA's key here, send it.
 */
static int cert_verify(const struct th_args *a, const char *const *args, int nargs)
{
    (void)nargs;
    const char *proof_file = th_args_get(a, "proof"), *key_file = th_args_get(a, "ca-key");
    if (!proof_file == !key_file)
        return th_usage_error(a, "give --proof FILE or --ca-key FILE");
    char *pem = NULL;
    size_t len;
    if (proof_file) {
        if (!(pem = read_text(proof_file, &len)))
            return th_usage_error(a, "cannot read %s: %s", proof_file, strerror(errno));
    } else {
        cJSON *data = NULL, *cmd = cert_cmd("generateVerificationCode", args[0]);
        if (cmd && !cJSON_AddStringToObject(cmd, "ifMatch", "*")) {
            cJSON_Delete(cmd);
            cmd = NULL;
        }
        int rc = th_call_once(a, cmd, &data, NULL);
        if (rc >= 0)
            return rc;
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(data, "properties");
        char err[512] = "";
        pem = proof_pem(th_str(p, "certificate", ""), key_file, th_str(p, "verificationCode", ""),
                        err, sizeof err);
        cJSON_Delete(data);
        if (!pem) {
            fprintf(stderr, "twinhub cert verify: %s\n", err);
            return TH_EXIT_FAIL;
        }
    }
    cJSON *cmd = cert_cmd("verifyCertificate", args[0]), *data;
    if (!cmd || !cJSON_AddStringToObject(cmd, "certificate", pem) ||
        !cJSON_AddStringToObject(cmd, "ifMatch", "*")) {
        cJSON_Delete(cmd);
        free(pem);
        return th_oom();
    }
    free(pem);
    int rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, human_cert, NULL);
}

static int cert_code(const struct th_args *a, const char *const *args, int nargs)
{
    (void)nargs;
    cJSON *cmd = cert_cmd("generateVerificationCode", args[0]), *data;
    const char *etag = th_args_get(a, "etag");
    if (!cmd || !cJSON_AddStringToObject(cmd, "ifMatch", etag ? etag : "*")) {
        cJSON_Delete(cmd);
        return th_oom();
    }
    int rc = th_call_once(a, cmd, &data, NULL);
    return th_finish(a, rc, data, human_cert, NULL);
}

static const struct th_optspec cert_specs[] = {
    {"verified", 0, false}, {"etag", 0, true}, {"proof", 0, true},
    {"ca-key", 0, true},    {NULL, 0, false},
};

static const struct th_action cert_actions[] = {
    {"list", cert_list, "", 0, 0, ""},
    {"show", cert_show, "", 1, 1, "NAME"},
    {"upload", cert_upload, "verified etag", 2, 2, "NAME FILE"},
    {"delete", cert_delete, "etag", 1, 1, "NAME"},
    {"code", cert_code, "etag", 1, 1, "NAME"},
    {"verify", cert_verify, "proof ca-key", 1, 1, "NAME"},
    {NULL, NULL, NULL, 0, 0, NULL},
};

void th_usage_cert(FILE *out)
{
    fprintf(out,
            "usage: twinhub cert list\n"
            "       twinhub cert show NAME\n"
            "       twinhub cert upload NAME FILE [--verified] [--etag E]\n"
            "       twinhub cert delete NAME [--etag E]\n"
            "       twinhub cert code NAME [--etag E]\n"
            "       twinhub cert verify NAME (--ca-key FILE | --proof FILE)\n"
            "\n"
            "Manage the CA certificates of the running hub: devices of authentication type\n"
            "certificateAuthority connect with certificates that chain to a verified one.\n"
            "\n"
            "  list     every CA certificate: verified or not, expiry, subject\n"
            "  show     one certificate\n"
            "  upload   add or replace certificate NAME from a PEM file; --verified skips the\n"
            "           proof of possession\n"
            "  delete   remove it (--etag makes it conditional; default any)\n"
            "  code     a new verification code: sign a certificate whose subject CN is the\n"
            "           code with the CA's private key, then `verify --proof` it\n"
            "  verify   prove possession of the CA's key: --proof FILE sends such a\n"
            "           certificate; --ca-key FILE does every step here with the CA's key\n");
    th_global_options_usage(out);
}

int th_cmd_cert(int argc, char **argv)
{
    return th_run_command("cert", cert_actions, cert_specs, th_usage_cert, argc, argv);
}
