/*
 * sas.c - Shared Access Signature tokens: parse, verify, split the resource
 * URI and sign (iothub-protocol.md 2.1-2.4, real-clients.md section 0).
 *
 * Clients disagree on how `sr` is encoded (upper-case escapes, lower-case
 * escapes, or not at all), so the HMAC is always computed over `sr` exactly
 * as sent and never rebuilt from our own host name.
 */
#include "sas.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "hmac.h"
#include "th_limits.h"
#include "topic.h"
#include "util.h"

/* Longest `sr` we sign or verify; a real one is host + two ids, well below. */
#define TH_SAS_MAX_SR 2048
/* Longest decoded key; hub keys are 32 bytes (16 to 64 accepted by the hub). */
#define TH_SAS_MAX_KEY 256
/* Longest `se` text: int64 seconds have at most 19 digits. */
#define TH_SAS_MAX_SE 19
#define TH_SHA256_LEN 32

/* ---- parse ---- */

/* Parse a decimal, non-negative, int64-range number. */
static bool parse_seconds(struct th_slice s, int64_t *out)
{
    if (s.len == 0 || s.len > TH_SAS_MAX_SE)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.ptr[i];
        if (c < '0' || c > '9')
            return false;
        if (v > (INT64_MAX - (c - '0')) / 10)
            return false;
        v = v * 10 + (c - '0');
    }
    *out = v;
    return true;
}

th_result th_sas_parse(const char *token, size_t len, struct th_sas_token *out,
                       struct th_error *err)
{
    static const char prefix[] = TH_SAS_PREFIX;
    const size_t plen = sizeof(prefix) - 1;
    memset(out, 0, sizeof(*out));

    if (token == NULL || len < plen || memcmp(token, prefix, plen) != 0)
        return th_error_set(err, TH_ERR_FORMAT, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                            "password is not a SAS token: it must start with '%s'", TH_SAS_PREFIX);
    if (memchr(token, '\0', len) != NULL)
        return th_error_set(err, TH_ERR_FORMAT, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                            "SAS token contains a NUL byte");

    const char *p = token + plen;
    const char *end = token + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *field_end = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(field_end - p));
        if (eq == NULL || eq == p)
            return th_error_set(err, TH_ERR_FORMAT, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                                "SAS token field '%.*s' is not of the form key=value",
                                (int)(field_end - p), p);
        struct th_slice key = {p, (size_t)(eq - p)};
        struct th_slice val = {eq + 1, (size_t)(field_end - eq - 1)};

        struct th_slice *slot = NULL;
        if (th_slice_eq_str(key, "sr"))
            slot = &out->sr;
        else if (th_slice_eq_str(key, "sig"))
            slot = &out->sig;
        else if (th_slice_eq_str(key, "se"))
            slot = &out->se;
        else if (th_slice_eq_str(key, "skn"))
            slot = &out->skn;
        /* Unknown fields are ignored, as the hub's own parser does. */
        if (slot != NULL) {
            if (slot->ptr != NULL)
                return th_error_set(err, TH_ERR_FORMAT, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                                    "SAS token has the '%.*s' field twice", (int)key.len, key.ptr);
            *slot = val;
        }
        p = amp ? amp + 1 : end;
    }

    static const struct {
        const char *name;
        size_t off;
    } required[] = {
        {"sr", offsetof(struct th_sas_token, sr)},
        {"sig", offsetof(struct th_sas_token, sig)},
        {"se", offsetof(struct th_sas_token, se)},
    };
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        const struct th_slice *s = (const struct th_slice *)((const char *)out + required[i].off);
        if (s->ptr == NULL)
            return th_error_set(err, TH_ERR_FORMAT, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                                "SAS token has no '%s' field", required[i].name);
        if (s->len == 0)
            return th_error_set(err, TH_ERR_FORMAT, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                                "SAS token field '%s' is empty", required[i].name);
    }
    if (!parse_seconds(out->se, &out->expiry))
        return th_error_set(err, TH_ERR_FORMAT, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                            "SAS token 'se' must be expiry seconds since 1970, got '%.*s'",
                            (int)(out->se.len > 40 ? 40 : out->se.len), out->se.ptr);
    return TH_OK;
}

/* ---- HMAC ---- */

/*
 * HMAC-SHA256(base64decode(key_b64), sr + "\n" + se) into mac[32].
 * TH_ERR_INVAL for a key that is not base64 or is empty/too long,
 * TH_ERR_TOO_LARGE for an over-long sr.
 */
static th_result sas_hmac(const char *key_b64, const char *sr, size_t sr_len, const char *se,
                          size_t se_len, uint8_t mac[TH_SHA256_LEN])
{
    if (key_b64 == NULL)
        return TH_ERR_INVAL;
    if (sr_len > TH_SAS_MAX_SR || se_len > TH_SAS_MAX_SE)
        return TH_ERR_TOO_LARGE;

    uint8_t key[TH_SAS_MAX_KEY];
    size_t key_len = 0;
    if (th_b64_decode(key_b64, strlen(key_b64), key, sizeof(key), &key_len) != TH_OK ||
        key_len == 0) {
        OPENSSL_cleanse(key, sizeof(key));
        return TH_ERR_INVAL;
    }

    char msg[TH_SAS_MAX_SR + 1 + TH_SAS_MAX_SE];
    memcpy(msg, sr, sr_len);
    msg[sr_len] = '\n';
    memcpy(msg + sr_len + 1, se, se_len);

    /* th_hmac_sha256, not HMAC(): the one-shot call costs twice as much per CONNECT (hmac.h). */
    th_result r = th_hmac_sha256(key, key_len, msg, sr_len + 1 + se_len, mac);
    OPENSSL_cleanse(key, sizeof(key));
    if (r != TH_OK)
        return TH_ERR_INVAL;
    return TH_OK;
}

/* ---- verify ---- */

/* Seconds to microseconds, saturating (th_time_format prints out-of-range times as "never"). */
static int64_t seconds_to_us(int64_t s)
{
    if (s > INT64_MAX / 1000000)
        return INT64_MAX;
    if (s < INT64_MIN / 1000000)
        return INT64_MIN;
    return s * 1000000;
}

th_result th_sas_verify(const struct th_sas_token *tok, const char *key_b64, int64_t now_s,
                        int64_t skew_s, struct th_error *err)
{
    if (tok == NULL || tok->sr.ptr == NULL || tok->sig.ptr == NULL || tok->se.ptr == NULL)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                            "SAS token was not parsed");

    uint8_t want[TH_SHA256_LEN];
    th_result r = sas_hmac(key_b64, tok->sr.ptr, tok->sr.len, tok->se.ptr, tok->se.len, want);
    if (r == TH_ERR_TOO_LARGE)
        return th_error_set(err, TH_ERR_AUTH, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                            "SAS token 'sr' is %zu bytes long, at most %d are accepted",
                            tok->sr.len, TH_SAS_MAX_SR);
    if (r != TH_OK)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                            "the identity's key is not valid base64; regenerate it");

    /*
     * sig is URL-encoded base64; escapes arrive in either hex case, and '+'
     * is a base64 digit here, never a space.
     */
    char sig_b64[128];
    size_t sig_b64_len = 0;
    uint8_t got[TH_SHA256_LEN + 3];
    size_t got_len = 0;
    if (th_pct_decode(tok->sig.ptr, tok->sig.len, false, sig_b64, sizeof(sig_b64), &sig_b64_len) !=
            TH_OK ||
        th_b64_decode(sig_b64, sig_b64_len, got, sizeof(got), &got_len) != TH_OK) {
        OPENSSL_cleanse(want, sizeof(want));
        return th_error_set(err, TH_ERR_AUTH, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                            "SAS token 'sig' is not a URL-encoded base64 HMAC-SHA256");
    }
    bool match = th_consttime_eq(want, sizeof(want), got, got_len);
    OPENSSL_cleanse(want, sizeof(want));
    if (!match)
        return th_error_set(err, TH_ERR_AUTH, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                            "SAS signature does not match the identity's keys");

    /* The skew comes from configuration unchecked; keep the arithmetic defined for any. */
    int64_t oldest;
    if (__builtin_sub_overflow(now_s, skew_s, &oldest))
        oldest = skew_s > 0 ? INT64_MIN : INT64_MAX;
    if (tok->expiry < oldest) {
        char at[TH_TIME_BUF], now[TH_TIME_BUF];
        th_time_format(seconds_to_us(tok->expiry), at);
        th_time_format(seconds_to_us(now_s), now);
        return th_error_set(err, TH_ERR_EXPIRED, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                            "SAS token expired at %s, now %s; create a new token", at, now);
    }
    return TH_OK;
}

/* ---- resource URI ---- */

/* Copy a non-empty, valid id slice into a NUL-terminated buffer of TH_MAX_ID_LEN + 1. */
static bool copy_id(struct th_slice id, char *dst)
{
    if (!th_id_valid(id.ptr, id.len))
        return false;
    memcpy(dst, id.ptr, id.len);
    dst[id.len] = '\0';
    return true;
}

/* Next '/'-separated segment of [*p, end); advances *p past the separator. */
static struct th_slice next_segment(const char **p, const char *end)
{
    const char *slash = memchr(*p, '/', (size_t)(end - *p));
    const char *seg_end = slash ? slash : end;
    struct th_slice s = {*p, (size_t)(seg_end - *p)};
    *p = slash ? slash + 1 : end;
    return s;
}

/*
 * A literal '/' in `sr` means the client did not encode it at all (the full
 * C SDK), so it is taken as is and a '%' in an id stays a '%'. Otherwise
 * every '/' arrived as %2F and the whole value is percent-decoded.
 */
th_result th_sas_resource(const struct th_sas_token *tok, struct th_sas_resource *out,
                          struct th_error *err)
{
    memset(out, 0, sizeof(*out));
    if (tok == NULL || tok->sr.ptr == NULL)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                            "SAS token was not parsed");

    char buf[TH_SAS_MAX_SR + 1];
    size_t len = 0;
    if (memchr(tok->sr.ptr, '/', tok->sr.len) != NULL) {
        if (tok->sr.len > TH_SAS_MAX_SR)
            goto too_long;
        memcpy(buf, tok->sr.ptr, tok->sr.len);
        len = tok->sr.len;
        buf[len] = '\0';
    } else {
        th_result r = th_pct_decode(tok->sr.ptr, tok->sr.len, false, buf, sizeof(buf), &len);
        if (r == TH_ERR_BUFFER)
            goto too_long;
        if (r != TH_OK)
            return th_error_set(err, TH_ERR_FORMAT, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                                "SAS token 'sr' has a broken percent escape");
    }
    if (memchr(buf, '\0', len) != NULL)
        return th_error_set(err, TH_ERR_FORMAT, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                            "SAS token 'sr' contains an encoded NUL byte");

    /* The path is matched by segment; tolerate one trailing '/'. */
    if (len > 0 && buf[len - 1] == '/')
        len--;

    const char *p = buf;
    const char *end = buf + len;
    struct th_slice host = next_segment(&p, end);
    if (host.len == 0 || host.len >= sizeof(out->host))
        goto bad_shape;
    memcpy(out->host, host.ptr, host.len);
    out->host[host.len] = '\0';
    if (p == end && host.ptr + host.len == end)
        return TH_OK; /* bare host: service or gateway token */

    struct th_slice seg = next_segment(&p, end);
    if (!th_slice_ieq(seg.ptr, seg.len, "devices", 7))
        goto bad_shape;
    if (seg.ptr + seg.len == end) {
        out->all_devices = true;
        return TH_OK;
    }

    struct th_slice dev = next_segment(&p, end);
    if (!copy_id(dev, out->device_id))
        goto bad_id;
    if (dev.ptr + dev.len == end)
        return TH_OK;

    seg = next_segment(&p, end);
    if (!th_slice_ieq(seg.ptr, seg.len, "modules", 7) || seg.ptr + seg.len == end)
        goto bad_shape;
    struct th_slice mod = next_segment(&p, end);
    if (mod.ptr + mod.len != end)
        goto bad_shape;
    if (!copy_id(mod, out->module_id))
        goto bad_id;
    return TH_OK;

too_long:
    memset(out, 0, sizeof(*out));
    return th_error_set(err, TH_ERR_FORMAT, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                        "SAS token 'sr' is longer than %d bytes", TH_SAS_MAX_SR);
bad_id:
    memset(out, 0, sizeof(*out));
    return th_error_set(err, TH_ERR_FORMAT, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                        "SAS token 'sr' names an invalid device or module id (1-%d characters "
                        "of letters, digits and -.+%%_#*?!(),=@$':;)",
                        TH_MAX_ID_LEN);
bad_shape:
    memset(out, 0, sizeof(*out));
    return th_error_set(err, TH_ERR_FORMAT, TH_EC_IOTHUB_UNAUTHORIZED_ACCESS,
                        "SAS token 'sr' '%.*s' is not {host}, {host}/devices, "
                        "{host}/devices/{id} or {host}/devices/{id}/modules/{id}",
                        (int)(len > 120 ? 120 : len), buf);
}

/* ---- sign ---- */

/* Policy names are letters, digits, '.', '_' and '-', so they need no encoding. */
static bool policy_name_valid(const char *name)
{
    if (*name == '\0')
        return false;
    for (const char *c = name; *c; c++) {
        if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
              *c == '.' || *c == '_' || *c == '-'))
            return false;
    }
    return true;
}

th_result th_sas_sign(const char *resource_uri, const char *key_b64, int64_t expiry,
                      const char *skn, char *buf, size_t size)
{
    if (buf != NULL && size > 0)
        buf[0] = '\0';
    if (resource_uri == NULL || key_b64 == NULL || expiry < 0 ||
        (skn != NULL && !policy_name_valid(skn)))
        return TH_ERR_INVAL;

    char sr[TH_SAS_MAX_SR + 1];
    size_t sr_len = 0;
    if (th_pct_encode(resource_uri, strlen(resource_uri), sr, sizeof(sr), &sr_len) != TH_OK)
        return TH_ERR_INVAL; /* resource longer than any real one */

    char se[TH_SAS_MAX_SE + 1];
    int se_len = snprintf(se, sizeof(se), "%lld", (long long)expiry);
    if (se_len < 0 || (size_t)se_len >= sizeof(se))
        return TH_ERR_INVAL;

    uint8_t mac[TH_SHA256_LEN];
    if (sas_hmac(key_b64, sr, sr_len, se, (size_t)se_len, mac) != TH_OK)
        return TH_ERR_INVAL;
    char sig_b64[64];
    char sig[3 * sizeof(sig_b64)];
    size_t sig_len = 0;
    th_result r = th_b64_encode(mac, sizeof(mac), sig_b64, sizeof(sig_b64));
    OPENSSL_cleanse(mac, sizeof(mac));
    if (r != TH_OK || th_pct_encode(sig_b64, strlen(sig_b64), sig, sizeof(sig), &sig_len) != TH_OK)
        return TH_ERR_INVAL;

    int n;
    if (skn != NULL)
        n = snprintf(NULL, 0, "%ssr=%s&sig=%s&se=%s&skn=%s", TH_SAS_PREFIX, sr, sig, se, skn);
    else
        n = snprintf(NULL, 0, "%ssr=%s&sig=%s&se=%s", TH_SAS_PREFIX, sr, sig, se);
    if (n < 0)
        return TH_ERR_INVAL;
    if (buf == NULL || (size_t)n >= size)
        return TH_ERR_BUFFER;
    if (skn != NULL)
        snprintf(buf, size, "%ssr=%s&sig=%s&se=%s&skn=%s", TH_SAS_PREFIX, sr, sig, se, skn);
    else
        snprintf(buf, size, "%ssr=%s&sig=%s&se=%s", TH_SAS_PREFIX, sr, sig, se);
    return TH_OK;
}
