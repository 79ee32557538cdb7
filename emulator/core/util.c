/*
 * util.c - small pure helpers shared by the core: clocks, the hub's time
 * format (iothub-protocol.md 7.1), base64 and percent encoding (SAS tokens,
 * section 2; property bags, section 4.1), random keys and constant-time
 * comparison. No I/O besides the OpenSSL RNG.
 */
#include "util.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

/*
 * Inputs bigger than this are refused so lengths always fit the int that
 * OpenSSL's EVP_EncodeBlock/EVP_DecodeBlock take.
 */
#define TH_B64_MAX_INPUT ((size_t)1 << 30)

/* Largest random key th_random_key makes; real hub keys are 32 bytes. */
#define TH_RANDOM_KEY_MAX_BYTES 128

int64_t th_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t th_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The hub prints .NET ticks (100 ns), so 7 fractional digits; we only have
 * microseconds, so the last digit is always 0. Times before the epoch are
 * floored so the fraction stays positive.
 */
/* Two decimal digits of v (0-99) at p. */
static void put2(char *p, int v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
}

/*
 * Written digit by digit with the days-to-civil conversion of H. Hinnant's
 * "chrono-compatible low-level date algorithms" instead of gmtime_r and
 * snprintf: a twin's JSON holds a time per $metadata node, and formatting
 * them was a tenth of the broker's instructions per twin update
 * (docs/performance.md). The text is the one
 * "%04d-%02d-%02dT%02d:%02d:%02d.%07lldZ" gives gmtime_r's fields
 * (tests/unit/test_util.c compares them).
 */
void th_time_format(int64_t us, char buf[TH_TIME_BUF])
{
    int64_t secs = us / 1000000;
    int64_t frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs -= 1;
    }
    int64_t days = secs / 86400, sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days -= 1;
    }
    /* Days since 1970-01-01 to year, month, day (proleptic Gregorian, like gmtime_r). */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);
    if (y < 1 || y > 9999) {
        memcpy(buf, TH_TIME_NEVER, sizeof(TH_TIME_NEVER));
        return;
    }
    put2(buf, (int)(y / 100));
    put2(buf + 2, (int)(y % 100));
    buf[4] = '-';
    put2(buf + 5, (int)m);
    buf[7] = '-';
    put2(buf + 8, (int)d);
    buf[10] = 'T';
    put2(buf + 11, (int)(sod / 3600));
    buf[13] = ':';
    put2(buf + 14, (int)(sod / 60 % 60));
    buf[16] = ':';
    put2(buf + 17, (int)(sod % 60));
    buf[19] = '.';
    int64_t f = frac * 10; /* seven digits, the hub's ticks; the last is always 0 */
    for (int i = 26; i >= 20; i--) {
        buf[i] = (char)('0' + f % 10);
        f /= 10;
    }
    buf[27] = 'Z';
    buf[28] = '\0';
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/*
 * Read by hand, digit by digit, where th_time_format writes digits: this
 * runs for every $metadata node of every twin a state directory loads, and
 * the sscanf it replaces was a sixth of that load (docs/performance.md).
 * Only a text th_time_format writes back byte for byte is accepted, as the
 * sscanf version did (tests/unit/test_util.c compares the two).
 */
bool th_time_parse(const char *text, int64_t *out)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddddddZ";
    int64_t field[7] = {0};
    int f = 0;
    for (size_t i = 0; i < sizeof shape - 1; i++) {
        char c = text[i];
        if (shape[i] != 'd') {
            if (c != shape[i])
                return false;
            f++;
        } else if (c < '0' || c > '9') {
            return false; /* also the NUL of a shorter text */
        } else {
            field[f] = field[f] * 10 + (c - '0');
        }
    }
    if (text[sizeof shape - 1] != '\0')
        return false;
    int64_t y = field[0], mo = field[1], d = field[2], h = field[3], mi = field[4], s = field[5],
            frac = field[6];
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 59 || frac % 10 != 0)
        return false;
    int64_t us =
        ((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s) * 1000000) + frac / 10;
    char back[TH_TIME_BUF];
    th_time_format(us, back);
    if (strcmp(back, text) != 0)
        return false;
    *out = us;
    return true;
}

/* ---- base64 ---- */

static size_t b64_encoded_len(size_t len)
{
    return (len + 2) / 3 * 4;
}

th_result th_b64_encode(const uint8_t *in, size_t len, char *out, size_t size)
{
    if (len > TH_B64_MAX_INPUT)
        return TH_ERR_TOO_LARGE;
    size_t need = b64_encoded_len(len) + 1;
    if (out == NULL || size < need) {
        if (out != NULL && size > 0)
            out[0] = '\0';
        return TH_ERR_BUFFER;
    }
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    out[need - 1] = '\0';
    return TH_OK;
}

static bool b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/*
 * EVP_DecodeBlock skips surrounding whitespace, returns the padded length
 * (padding decodes as zero bytes) and writes whole groups of three. So the
 * input is validated here first, the full groups are decoded straight into
 * `out`, and the last group goes through a small buffer so that exactly
 * *out_len bytes are written.
 */
th_result th_b64_decode(const char *in, size_t len, uint8_t *out, size_t size, size_t *out_len)
{
    if (out_len != NULL)
        *out_len = 0;
    if (len == 0)
        return TH_OK;
    if (in == NULL || len % 4 != 0 || len > TH_B64_MAX_INPUT)
        return TH_ERR_FORMAT;

    size_t pad = 0;
    if (in[len - 1] == '=')
        pad = in[len - 2] == '=' ? 2 : 1;
    for (size_t i = 0; i < len - pad; i++) {
        if (!b64_char(in[i]))
            return TH_ERR_FORMAT;
    }

    size_t exact = len / 4 * 3 - pad;
    if (exact > size || (exact > 0 && out == NULL))
        return TH_ERR_BUFFER;

    size_t head = len - 4; /* all groups but the last */
    if (head > 0 &&
        EVP_DecodeBlock(out, (const unsigned char *)in, (int)head) != (int)(head / 4 * 3))
        return TH_ERR_FORMAT;
    unsigned char last[3];
    if (EVP_DecodeBlock(last, (const unsigned char *)in + head, 4) != 3)
        return TH_ERR_FORMAT;
    memcpy(out + head / 4 * 3, last, 3 - pad);

    if (out_len != NULL)
        *out_len = exact;
    return TH_OK;
}

/* ---- percent encoding ---- */

int th_hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

th_result th_pct_decode(const char *in, size_t len, bool plus_is_space, char *out, size_t size,
                        size_t *out_len)
{
    /* First pass validates and measures, so a failure writes nothing. */
    size_t need = 0;
    for (size_t i = 0; i < len; i++, need++) {
        if (in[i] == '%') {
            if (len - i < 3 || th_hex_value(in[i + 1]) < 0 || th_hex_value(in[i + 2]) < 0)
                return TH_ERR_FORMAT;
            i += 2;
        }
    }
    if (out == NULL || need + 1 > size) {
        if (out != NULL && size > 0)
            out[0] = '\0';
        return TH_ERR_BUFFER;
    }

    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '%') {
            c = (char)(th_hex_value(in[i + 1]) << 4 | th_hex_value(in[i + 2]));
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        out[o++] = c;
    }
    out[o] = '\0';
    if (out_len != NULL)
        *out_len = o;
    return TH_OK;
}

static bool pct_unreserved(unsigned char c)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("-_.!~*'()", c) != NULL;
}

th_result th_pct_encode(const char *in, size_t len, char *out, size_t size, size_t *out_len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t need = 0;
    for (size_t i = 0; i < len; i++)
        need += pct_unreserved((unsigned char)in[i]) ? 1 : 3;
    if (out == NULL || need + 1 > size) {
        if (out != NULL && size > 0)
            out[0] = '\0';
        return TH_ERR_BUFFER;
    }

    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (pct_unreserved(c)) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 0x0F];
        }
    }
    out[o] = '\0';
    if (out_len != NULL)
        *out_len = o;
    return TH_OK;
}

/* ---- keys and comparison ---- */

/*
 * TH_ERR_INVAL for nbytes 0 or above TH_RANDOM_KEY_MAX_BYTES, and also when
 * the RNG fails (there is no better-fitting result for that).
 */
th_result th_random_key(size_t nbytes, char *out, size_t size)
{
    if (nbytes == 0 || nbytes > TH_RANDOM_KEY_MAX_BYTES)
        return TH_ERR_INVAL;
    if (out == NULL || size < b64_encoded_len(nbytes) + 1) {
        if (out != NULL && size > 0)
            out[0] = '\0';
        return TH_ERR_BUFFER;
    }
    uint8_t raw[TH_RANDOM_KEY_MAX_BYTES];
    if (RAND_bytes(raw, (int)nbytes) != 1) {
        OPENSSL_cleanse(raw, sizeof(raw));
        out[0] = '\0';
        return TH_ERR_INVAL;
    }
    th_result r = th_b64_encode(raw, nbytes, out, size);
    OPENSSL_cleanse(raw, sizeof(raw));
    return r;
}

bool th_consttime_eq(const void *a, size_t alen, const void *b, size_t blen)
{
    /* The length is not secret; only the content comparison must not leak. */
    if (alen != blen)
        return false;
    if (alen == 0)
        return true;
    return CRYPTO_memcmp(a, b, alen) == 0;
}

static char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

bool th_slice_ieq(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        if (ascii_lower(a[i]) != ascii_lower(b[i]))
            return false;
    }
    return true;
}

bool th_etag_matches(const char *if_match, const char *etag)
{
    if (if_match == NULL || strcmp(if_match, "*") == 0 || strcmp(if_match, "\"*\"") == 0)
        return true;
    if (etag == NULL)
        return false;
    size_t n = strlen(if_match);
    if (n >= 2 && if_match[0] == '"' && if_match[n - 1] == '"')
        return strlen(etag) == n - 2 && strncmp(if_match + 1, etag, n - 2) == 0;
    return strcmp(if_match, etag) == 0;
}

bool th_utf8_is_text(const void *text, size_t len)
{
    const unsigned char *s = text;
    size_t i = 0;
    if (s == NULL)
        return len == 0;
    while (i < len) {
        unsigned char ch = s[i];
        size_t n;
        if (ch == 0)
            return false;
        else if (ch < 0x80)
            n = 0;
        else if ((ch & 0xE0) == 0xC0)
            n = 1;
        else if ((ch & 0xF0) == 0xE0)
            n = 2;
        else if ((ch & 0xF8) == 0xF0)
            n = 3;
        else
            return false;
        if (len - i - 1 < n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
        }
        i += n + 1;
    }
    return true;
}
