/*
 * test_util.c - unit tests for emulator/core/util.c: the hub's time format,
 * base64, percent encoding (SAS tokens and property bags), random keys and
 * the comparison helpers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <stdio.h>
#include <time.h>

#include "util.h"

/* ---- clocks and time ---- */

static void test_th_now_us_after_2020_succeeds(void **state)
{
    (void)state;
    assert_true(th_now_us() > INT64_C(1577836800) * 1000000);
}

static void test_th_mono_ms_not_decreasing_succeeds(void **state)
{
    (void)state;
    int64_t a = th_mono_ms();
    int64_t b = th_mono_ms();
    assert_true(b >= a);
}

static void test_th_time_format_seven_digits_succeeds(void **state)
{
    (void)state;
    char buf[TH_TIME_BUF];
    /* 2020-07-09T13:55:50.797698Z */
    th_time_format(INT64_C(1594302950) * 1000000 + 797698, buf);
    assert_string_equal(buf, "2020-07-09T13:55:50.7976980Z");
}

static void test_th_time_format_epoch_succeeds(void **state)
{
    (void)state;
    char buf[TH_TIME_BUF];
    th_time_format(0, buf);
    assert_string_equal(buf, "1970-01-01T00:00:00.0000000Z");
}

static void test_th_time_format_before_epoch_succeeds(void **state)
{
    (void)state;
    char buf[TH_TIME_BUF];
    th_time_format(-1, buf);
    assert_string_equal(buf, "1969-12-31T23:59:59.9999990Z");
}

/* ---- base64 ---- */

static void test_th_b64_encode_rfc4648_vectors_succeeds(void **state)
{
    (void)state;
    static const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *want[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        char out[16];
        assert_int_equal(th_b64_encode((const uint8_t *)in[i], strlen(in[i]), out, sizeof(out)),
                         TH_OK);
        assert_string_equal(out, want[i]);
    }
}

static void test_th_b64_encode_buffer_too_small_fails(void **state)
{
    (void)state;
    char out[4] = "xyz";
    assert_int_equal(th_b64_encode((const uint8_t *)"foo", 3, out, sizeof(out)), TH_ERR_BUFFER);
    assert_string_equal(out, "");
}

static void test_th_b64_decode_rfc4648_vectors_succeeds(void **state)
{
    (void)state;
    static const char *in[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    static const char *want[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    for (size_t i = 0; i < 7; i++) {
        uint8_t out[16];
        size_t n = 99;
        assert_int_equal(th_b64_decode(in[i], strlen(in[i]), out, sizeof(out), &n), TH_OK);
        assert_int_equal(n, strlen(want[i]));
        assert_memory_equal(out, want[i], n);
    }
}

static void test_th_b64_decode_exact_buffer_succeeds(void **state)
{
    (void)state;
    /* "fooba" needs 5 bytes even though the padded group decodes to 6. */
    uint8_t out[6] = {0, 0, 0, 0, 0, 0xEE};
    size_t n = 0;
    assert_int_equal(th_b64_decode("Zm9vYmE=", 8, out, 5, &n), TH_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "fooba", 5);
    assert_int_equal(out[5], 0xEE);
}

static void test_th_b64_decode_32_byte_key_succeeds(void **state)
{
    (void)state;
    const char *key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    uint8_t out[32];
    size_t n = 0;
    assert_int_equal(th_b64_decode(key, strlen(key), out, sizeof(out), &n), TH_OK);
    assert_int_equal(n, 32);
    for (size_t i = 0; i < 32; i++)
        assert_int_equal(out[i], i);
}

static void test_th_b64_decode_buffer_too_small_fails(void **state)
{
    (void)state;
    uint8_t out[4];
    size_t n = 0;
    assert_int_equal(th_b64_decode("Zm9vYmFy", 8, out, sizeof(out), &n), TH_ERR_BUFFER);
    assert_int_equal(n, 0);
}

static void test_th_b64_decode_bad_length_fails(void **state)
{
    (void)state;
    uint8_t out[8];
    size_t n;
    assert_int_equal(th_b64_decode("Zm9", 3, out, sizeof(out), &n), TH_ERR_FORMAT);
}

static void test_th_b64_decode_bad_char_fails(void **state)
{
    (void)state;
    uint8_t out[8];
    size_t n;
    assert_int_equal(th_b64_decode("Zm9v*A==", 8, out, sizeof(out), &n), TH_ERR_FORMAT);
    assert_int_equal(th_b64_decode("Zm 9", 4, out, sizeof(out), &n), TH_ERR_FORMAT);
}

static void test_th_b64_decode_padding_inside_fails(void **state)
{
    (void)state;
    uint8_t out[8];
    size_t n;
    assert_int_equal(th_b64_decode("Zg==Zm9v", 8, out, sizeof(out), &n), TH_ERR_FORMAT);
    assert_int_equal(th_b64_decode("Z===", 4, out, sizeof(out), &n), TH_ERR_FORMAT);
}

/* ---- percent decoding ---- */

static void test_th_pct_decode_mixed_case_escapes_succeeds(void **state)
{
    (void)state;
    char out[32];
    size_t n = 0;
    assert_int_equal(th_pct_decode("a%2Fb%2fc%3d", 12, false, out, sizeof(out), &n), TH_OK);
    assert_string_equal(out, "a/b/c=");
    assert_int_equal(n, 6);
}

static void test_th_pct_decode_plus_kept_succeeds(void **state)
{
    (void)state;
    char out[16];
    size_t n = 0;
    assert_int_equal(th_pct_decode("a+b", 3, false, out, sizeof(out), &n), TH_OK);
    assert_string_equal(out, "a+b");
}

static void test_th_pct_decode_plus_is_space_succeeds(void **state)
{
    (void)state;
    char out[16];
    size_t n = 0;
    assert_int_equal(th_pct_decode("a+b%2B", 6, true, out, sizeof(out), &n), TH_OK);
    assert_string_equal(out, "a b+");
}

static void test_th_pct_decode_truncated_escape_fails(void **state)
{
    (void)state;
    char out[16] = "keep";
    size_t n = 0;
    assert_int_equal(th_pct_decode("ab%2", 4, false, out, sizeof(out), &n), TH_ERR_FORMAT);
    assert_int_equal(th_pct_decode("ab%", 3, false, out, sizeof(out), &n), TH_ERR_FORMAT);
    assert_string_equal(out, "keep");
}

static void test_th_pct_decode_bad_hex_fails(void **state)
{
    (void)state;
    char out[16];
    size_t n = 0;
    assert_int_equal(th_pct_decode("%zz", 3, false, out, sizeof(out), &n), TH_ERR_FORMAT);
}

static void test_th_pct_decode_buffer_too_small_fails(void **state)
{
    (void)state;
    char out[3];
    size_t n = 0;
    /* decodes to 3 bytes, needs 4 with the NUL */
    assert_int_equal(th_pct_decode("a%2Fb", 5, false, out, sizeof(out), &n), TH_ERR_BUFFER);
    assert_string_equal(out, "");
}

static void test_th_pct_decode_respects_len_succeeds(void **state)
{
    (void)state;
    char out[16];
    size_t n = 0;
    assert_int_equal(th_pct_decode("abc%41def", 6, false, out, sizeof(out), &n), TH_OK);
    assert_string_equal(out, "abcA");
}

/* ---- percent encoding ---- */

static void test_th_pct_encode_like_encodeuricomponent_succeeds(void **state)
{
    (void)state;
    char out[128];
    size_t n = 0;
    const char *in = "contoso.azure-devices.net/devices/d 1:$x";
    assert_int_equal(th_pct_encode(in, strlen(in), out, sizeof(out), &n), TH_OK);
    assert_string_equal(out, "contoso.azure-devices.net%2Fdevices%2Fd%201%3A%24x");
    assert_int_equal(n, strlen(out));
}

static void test_th_pct_encode_unreserved_kept_succeeds(void **state)
{
    (void)state;
    char out[64];
    size_t n = 0;
    const char *in = "AZaz09-_.!~*'()";
    assert_int_equal(th_pct_encode(in, strlen(in), out, sizeof(out), &n), TH_OK);
    assert_string_equal(out, in);
}

static void test_th_pct_encode_high_bytes_upper_hex_succeeds(void **state)
{
    (void)state;
    char out[16];
    size_t n = 0;
    assert_int_equal(th_pct_encode("\xc3\xa9+", 3, out, sizeof(out), &n), TH_OK);
    assert_string_equal(out, "%C3%A9%2B");
}

static void test_th_pct_encode_buffer_too_small_fails(void **state)
{
    (void)state;
    char out[4] = "xyz";
    size_t n = 0;
    /* "/" needs 3 bytes + NUL = 4: fits; "a/" needs 5: does not */
    assert_int_equal(th_pct_encode("/", 1, out, sizeof(out), &n), TH_OK);
    assert_string_equal(out, "%2F");
    assert_int_equal(th_pct_encode("a/", 2, out, sizeof(out), &n), TH_ERR_BUFFER);
    assert_string_equal(out, "");
}

static void test_th_pct_encode_roundtrip_succeeds(void **state)
{
    (void)state;
    char bytes[256];
    for (int i = 0; i < 256; i++)
        bytes[i] = (char)i;
    char enc[3 * 256 + 1];
    char dec[257];
    size_t n = 0, m = 0;
    assert_int_equal(th_pct_encode(bytes, 256, enc, sizeof(enc), &n), TH_OK);
    assert_int_equal(th_pct_decode(enc, n, false, dec, sizeof(dec), &m), TH_OK);
    assert_int_equal(m, 256);
    assert_memory_equal(dec, bytes, 256);
}

/* ---- random keys ---- */

static void test_th_random_key_32_bytes_succeeds(void **state)
{
    (void)state;
    char a[64], b[64];
    assert_int_equal(th_random_key(32, a, sizeof(a)), TH_OK);
    assert_int_equal(th_random_key(32, b, sizeof(b)), TH_OK);
    assert_int_equal(strlen(a), 44);
    assert_string_not_equal(a, b);
    uint8_t raw[32];
    size_t n = 0;
    assert_int_equal(th_b64_decode(a, strlen(a), raw, sizeof(raw), &n), TH_OK);
    assert_int_equal(n, 32);
}

static void test_th_random_key_buffer_too_small_fails(void **state)
{
    (void)state;
    char out[44];
    assert_int_equal(th_random_key(32, out, sizeof(out)), TH_ERR_BUFFER);
}

static void test_th_random_key_zero_bytes_fails(void **state)
{
    (void)state;
    char out[8];
    assert_int_equal(th_random_key(0, out, sizeof(out)), TH_ERR_INVAL);
}

/* ---- comparison ---- */

static void test_th_consttime_eq_equal_succeeds(void **state)
{
    (void)state;
    assert_true(th_consttime_eq("abc", 3, "abc", 3));
    assert_true(th_consttime_eq("", 0, "", 0));
}

static void test_th_consttime_eq_different_fails(void **state)
{
    (void)state;
    assert_false(th_consttime_eq("abc", 3, "abd", 3));
    assert_false(th_consttime_eq("abc", 3, "abcd", 4));
}

static void test_th_slice_ieq_case_differs_succeeds(void **state)
{
    (void)state;
    assert_true(th_slice_ieq("Contoso.Azure-Devices.NET", 25, "contoso.azure-devices.net", 25));
    assert_true(th_slice_ieq(NULL, 0, "", 0));
}

static void test_th_slice_ieq_different_fails(void **state)
{
    (void)state;
    assert_false(th_slice_ieq("abc", 3, "abd", 3));
    assert_false(th_slice_ieq("abc", 3, "ab", 2));
    /* '@' and '`' differ from 'A'/'a' only in bits a naive fold would clear */
    assert_false(th_slice_ieq("@", 1, "`", 1));
}

static void test_th_utf8_is_text_utf8_succeeds(void **state)
{
    (void)state;
    assert_true(th_utf8_is_text("", 0));
    assert_true(th_utf8_is_text("plain", 5));
    assert_true(th_utf8_is_text("gr\xC3\xBC\xC3\x9F \xE2\x82\xAC \xF0\x9F\x98\x80", 15));
}

static void test_th_utf8_is_text_binary_fails(void **state)
{
    (void)state;
    assert_false(th_utf8_is_text("a\0b", 3));         /* NUL */
    assert_false(th_utf8_is_text("\xFF", 1));         /* no lead byte */
    assert_false(th_utf8_is_text("\xC3", 1));         /* cut short */
    assert_false(th_utf8_is_text("\xE2\x28\xA1", 3)); /* bad continuation */
}

static void test_th_etag_matches_absent_or_star_succeeds(void **state)
{
    (void)state;
    assert_true(th_etag_matches(NULL, "AAAAAAAAAAE="));
    assert_true(th_etag_matches("*", "AAAAAAAAAAE="));
    assert_true(th_etag_matches("\"*\"", "MQ=="));
}

static void test_th_etag_matches_same_etag_succeeds(void **state)
{
    (void)state;
    assert_true(th_etag_matches("AAAAAAAAAAE=", "AAAAAAAAAAE="));
    assert_true(th_etag_matches("\"AAAAAAAAAAE=\"", "AAAAAAAAAAE="));
    assert_true(th_etag_matches("\"\"", ""));
}

static void test_th_etag_matches_other_etag_fails(void **state)
{
    (void)state;
    assert_false(th_etag_matches("AAAAAAAAAAE=", "AAAAAAAAAAI="));
    assert_false(th_etag_matches("\"AAAAAAAAAAE=\"", "AAAAAAAAAAI="));
    /* a quote on one side only is part of the value */
    assert_false(th_etag_matches("\"AAAAAAAAAAE=", "AAAAAAAAAAE="));
    assert_false(th_etag_matches("\"AAAAAAAAAAE=\"", "AAAAAAAAAAE"));
    assert_false(th_etag_matches("\"", ""));
    assert_false(th_etag_matches("**", "MQ=="));
    assert_false(th_etag_matches("", "MQ=="));
    assert_false(th_etag_matches("MQ==", NULL));
}

/* A small deterministic generator (31 bits), so the test needs nothing from the libc's. */
static unsigned lcg_next(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 1) & 0x7fffffffu;
}

/* th_time_format gives the text of gmtime_r + snprintf, across eras, leap days and ends. */
static void test_th_time_format_same_as_gmtime_succeeds(void **state)
{
    (void)state;
    unsigned seed = 7;
    static const int64_t fixed[] = {0,
                                    -1,
                                    1,
                                    951782400000000LL /* 2000-02-29 */,
                                    -62135596800000000LL /* 0001-01-01 */,
                                    253402300799999999LL /* 9999-12-31T23:59:59.999999 */,
                                    4107542399000000LL /* 2100-02-28T23:59:59 */};
    for (int i = 0; i < 200000; i++) {
        int64_t us = i < 7 ? fixed[i]
                           : ((int64_t)lcg_next(&seed) << 32 | (int64_t)lcg_next(&seed) << 1) %
                                     (253402300800000000LL + 62135596800000000LL) -
                                 62135596800000000LL;
        char mine[TH_TIME_BUF], ref[64];
        th_time_format(us, mine);
        int64_t secs = us / 1000000, frac = us % 1000000;
        if (frac < 0) {
            frac += 1000000;
            secs -= 1;
        }
        time_t t = (time_t)secs;
        struct tm tm;
        assert_non_null(gmtime_r(&t, &tm));
        snprintf(ref, sizeof ref, "%04d-%02d-%02dT%02d:%02d:%02d.%07lldZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long long)frac * 10);
        assert_string_equal(mine, ref);
    }
    char out[TH_TIME_BUF];
    th_time_format(-62135596800000001LL, out); /* year 0 */
    assert_string_equal(out, TH_TIME_NEVER);
    th_time_format(253402300800000000LL, out); /* year 10000 */
    assert_string_equal(out, TH_TIME_NEVER);
}

/* The sscanf reading th_time_parse replaced (twin_meta.c's time_of_text), the reference. */
static int64_t ref_days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool ref_time_parse(const char *text, int64_t *out)
{
    int y, mo, d, h, mi, s;
    long long frac;
    int n = 0;
    if (strlen(text) != 28 ||
        sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d.%7lldZ%n", &y, &mo, &d, &h, &mi, &s, &frac, &n) !=
            7 ||
        n != 28 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 59 ||
        frac < 0 || frac % 10 != 0)
        return false;
    int64_t us = ((ref_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s) * 1000000) +
                 (int64_t)(frac / 10);
    char back[TH_TIME_BUF];
    th_time_format(us, back);
    if (strcmp(back, text) != 0)
        return false;
    *out = us;
    return true;
}

/*
 * th_time_parse decides as the sscanf version did, on formatted times and on
 * texts one to three random bytes away from them (signs, spaces, days past a
 * month's end, odd last digits, cut short or longer): same verdict, same value.
 */
static void test_th_time_parse_same_as_sscanf_succeeds(void **state)
{
    (void)state;
    unsigned seed = 11;
    static const char alphabet[] = "0123456789+- .:TZ\t0x9";
    int accepted = 0, refused = 0;
    for (int i = 0; i < 300000; i++) {
        int64_t us = ((int64_t)lcg_next(&seed) << 32 | (int64_t)lcg_next(&seed) << 1) %
                         (253402300800000000LL + 62135596800000000LL) -
                     62135596800000000LL;
        char text[64];
        th_time_format(us, text);
        int edits = i % 4; /* a quarter unchanged */
        for (int e = 0; e < edits; e++) {
            unsigned r = lcg_next(&seed);
            size_t at = r % 28;
            switch (r / 28 % 4) {
            case 0: /* another digit */
                text[at] = (char)('0' + lcg_next(&seed) % 10);
                break;
            case 1: /* any character of the alphabet */
                text[at] = alphabet[lcg_next(&seed) % (sizeof alphabet - 1)];
                break;
            case 2: /* cut short */
                text[at] = '\0';
                break;
            default: /* one more character */
                if (strlen(text) < 60) {
                    size_t len = strlen(text);
                    text[len] = (char)('0' + lcg_next(&seed) % 10);
                    text[len + 1] = '\0';
                }
                break;
            }
        }
        int64_t mine = -7, ref = -7;
        bool a = th_time_parse(text, &mine), b = ref_time_parse(text, &ref);
        if (a != b || mine != ref)
            fprintf(stderr, "# '%s': th_time_parse %d (%lld), sscanf %d (%lld)\n", text, a,
                    (long long)mine, b, (long long)ref);
        assert_int_equal(a, b);
        assert_true(mine == ref);
        if (a)
            accepted++;
        else
            refused++;
        if (edits == 0) {
            assert_true(a); /* every formatted time reads back */
            assert_true(mine == us);
        }
    }
    assert_true(accepted > 75000 && refused > 50000);
}

static void test_th_time_parse_not_a_hub_time_fails(void **state)
{
    (void)state;
    int64_t us = 42;
    static const char *const bad[] = {
        "",
        "2020-07-09T13:55:50.797698Z",   /* six digits */
        "2020-07-09T13:55:50.7976981Z",  /* not a whole microsecond */
        "2020-02-30T13:55:50.7976980Z",  /* no such day */
        "2020-07-09 13:55:50.7976980Z",  /* space for T */
        "+020-07-09T13:55:50.7976980Z",  /* a sign */
        "0000-01-01T00:00:00.0000000Z",  /* year 0 */
        "2020-07-09T13:55:50.7976980Zx", /* more after Z */
        TH_TIME_NEVER,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(th_time_parse(bad[i], &us));
        assert_true(us == 42);
    }
    assert_true(th_time_parse("2020-07-09T13:55:50.7976980Z", &us));
    assert_true(us == INT64_C(1594302950) * 1000000 + 797698);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_now_us_after_2020_succeeds),
        cmocka_unit_test(test_th_mono_ms_not_decreasing_succeeds),
        cmocka_unit_test(test_th_time_format_seven_digits_succeeds),
        cmocka_unit_test(test_th_time_format_epoch_succeeds),
        cmocka_unit_test(test_th_time_format_before_epoch_succeeds),
        cmocka_unit_test(test_th_b64_encode_rfc4648_vectors_succeeds),
        cmocka_unit_test(test_th_b64_encode_buffer_too_small_fails),
        cmocka_unit_test(test_th_b64_decode_rfc4648_vectors_succeeds),
        cmocka_unit_test(test_th_b64_decode_exact_buffer_succeeds),
        cmocka_unit_test(test_th_b64_decode_32_byte_key_succeeds),
        cmocka_unit_test(test_th_b64_decode_buffer_too_small_fails),
        cmocka_unit_test(test_th_b64_decode_bad_length_fails),
        cmocka_unit_test(test_th_b64_decode_bad_char_fails),
        cmocka_unit_test(test_th_b64_decode_padding_inside_fails),
        cmocka_unit_test(test_th_pct_decode_mixed_case_escapes_succeeds),
        cmocka_unit_test(test_th_pct_decode_plus_kept_succeeds),
        cmocka_unit_test(test_th_pct_decode_plus_is_space_succeeds),
        cmocka_unit_test(test_th_pct_decode_truncated_escape_fails),
        cmocka_unit_test(test_th_pct_decode_bad_hex_fails),
        cmocka_unit_test(test_th_pct_decode_buffer_too_small_fails),
        cmocka_unit_test(test_th_pct_decode_respects_len_succeeds),
        cmocka_unit_test(test_th_pct_encode_like_encodeuricomponent_succeeds),
        cmocka_unit_test(test_th_pct_encode_unreserved_kept_succeeds),
        cmocka_unit_test(test_th_pct_encode_high_bytes_upper_hex_succeeds),
        cmocka_unit_test(test_th_pct_encode_buffer_too_small_fails),
        cmocka_unit_test(test_th_pct_encode_roundtrip_succeeds),
        cmocka_unit_test(test_th_random_key_32_bytes_succeeds),
        cmocka_unit_test(test_th_random_key_buffer_too_small_fails),
        cmocka_unit_test(test_th_random_key_zero_bytes_fails),
        cmocka_unit_test(test_th_consttime_eq_equal_succeeds),
        cmocka_unit_test(test_th_consttime_eq_different_fails),
        cmocka_unit_test(test_th_slice_ieq_case_differs_succeeds),
        cmocka_unit_test(test_th_slice_ieq_different_fails),
        cmocka_unit_test(test_th_utf8_is_text_utf8_succeeds),
        cmocka_unit_test(test_th_utf8_is_text_binary_fails),
        cmocka_unit_test(test_th_etag_matches_absent_or_star_succeeds),
        cmocka_unit_test(test_th_etag_matches_same_etag_succeeds),
        cmocka_unit_test(test_th_etag_matches_other_etag_fails),
        cmocka_unit_test(test_th_time_format_same_as_gmtime_succeeds),
        cmocka_unit_test(test_th_time_parse_same_as_sscanf_succeeds),
        cmocka_unit_test(test_th_time_parse_not_a_hub_time_fails),
    };
    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
