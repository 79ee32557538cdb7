/*
 * test_sas.c - unit tests for emulator/core/sas.c: SAS token parsing,
 * verification (the test vectors of iothub-protocol.md 2.2 and the client
 * variants of real-clients.md section 0), resource URI splitting and signing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sas.h"

/* Key = base64 of bytes 0x00..0x1F, se = 1700000000 (iothub-protocol.md 2.2). */
#define KEY "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define OTHER_KEY "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define SE 1700000000
#define NOW (SE - 60)

#define ROW1_TOKEN                                                                                 \
    "SharedAccessSignature sr=contoso.azure-devices.net%2Fdevices%2Fdev1"                          \
    "&sig=QKiSs%2Fj3XsPN5ctMtRoJa7c%2BYA9RuV2Hs4XwTyXK8%2Bw%3D&se=1700000000"
#define ROW2_TOKEN                                                                                 \
    "SharedAccessSignature sr=contoso.azure-devices.net%2fdevices%2fdev1"                          \
    "&sig=P58O7HP0lOJzzOFYtihCdO19CjbTxCzN2hLT426leA4%3d&se=1700000000"
#define ROW3_TOKEN                                                                                 \
    "SharedAccessSignature sr=contoso.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fmod1"         \
    "&sig=OBEqyWoUShx6qzstZyjJbvO5ZoOJk7Z%2FEr9y8CA3uHo%3D&se=1700000000"
#define ROW4_TOKEN                                                                                 \
    "SharedAccessSignature sr=contoso.azure-devices.net"                                           \
    "&sig=WE7ZGaH41oPJWTtP9uzj%2BHCS5xI54HpDJcMN5KRb5PI%3D&se=1700000000&skn=iothubowner"

/* Parse `token` and verify it against `key` at NOW with no skew. */
static th_result parse_and_verify(const char *token, const char *key, struct th_error *err)
{
    struct th_sas_token tok;
    th_result r = th_sas_parse(token, strlen(token), &tok, err);
    if (r != TH_OK)
        return r;
    return th_sas_verify(&tok, key, NOW, 0, err);
}

/* ---- parse ---- */

static void test_th_sas_parse_row1_token_succeeds(void **state)
{
    (void)state;
    struct th_sas_token tok;
    struct th_error err = {0};
    assert_int_equal(th_sas_parse(ROW1_TOKEN, strlen(ROW1_TOKEN), &tok, &err), TH_OK);
    assert_true(th_slice_eq_str(tok.sr, "contoso.azure-devices.net%2Fdevices%2Fdev1"));
    assert_true(th_slice_eq_str(tok.sig, "QKiSs%2Fj3XsPN5ctMtRoJa7c%2BYA9RuV2Hs4XwTyXK8%2Bw%3D"));
    assert_true(th_slice_eq_str(tok.se, "1700000000"));
    assert_null(tok.skn.ptr);
    assert_int_equal(tok.expiry, SE);
}

static void test_th_sas_parse_any_field_order_succeeds(void **state)
{
    (void)state;
    const char *t = "SharedAccessSignature sig=abc&se=12&skn=device&sr=host%2Fdevices%2Fd";
    struct th_sas_token tok;
    assert_int_equal(th_sas_parse(t, strlen(t), &tok, NULL), TH_OK);
    assert_true(th_slice_eq_str(tok.sr, "host%2Fdevices%2Fd"));
    assert_true(th_slice_eq_str(tok.sig, "abc"));
    assert_true(th_slice_eq_str(tok.skn, "device"));
    assert_int_equal(tok.expiry, 12);
}

static void test_th_sas_parse_unknown_field_ignored_succeeds(void **state)
{
    (void)state;
    const char *t = "SharedAccessSignature sr=h&sig=s&se=1&foo=bar";
    struct th_sas_token tok;
    assert_int_equal(th_sas_parse(t, strlen(t), &tok, NULL), TH_OK);
}

static void test_th_sas_parse_respects_len_succeeds(void **state)
{
    (void)state;
    const char *t = "SharedAccessSignature sr=h&sig=s&se=12junk";
    struct th_sas_token tok;
    assert_int_equal(th_sas_parse(t, strlen(t) - 4, &tok, NULL), TH_OK);
    assert_int_equal(tok.expiry, 12);
}

static void test_th_sas_parse_missing_prefix_fails(void **state)
{
    (void)state;
    const char *t = "sr=h&sig=s&se=1";
    struct th_sas_token tok;
    struct th_error err = {0};
    assert_int_equal(th_sas_parse(t, strlen(t), &tok, &err), TH_ERR_FORMAT);
    assert_int_equal(err.result, TH_ERR_FORMAT);
    assert_int_equal(err.code, 401002);
    assert_non_null(strstr(err.message, "SharedAccessSignature"));
}

static void test_th_sas_parse_missing_se_fails(void **state)
{
    (void)state;
    const char *t = "SharedAccessSignature sr=h&sig=s";
    struct th_sas_token tok;
    struct th_error err = {0};
    assert_int_equal(th_sas_parse(t, strlen(t), &tok, &err), TH_ERR_FORMAT);
    assert_string_equal(err.message, "SAS token has no 'se' field");
}

static void test_th_sas_parse_missing_sr_fails(void **state)
{
    (void)state;
    const char *t = "SharedAccessSignature sig=s&se=1";
    struct th_sas_token tok;
    struct th_error err = {0};
    assert_int_equal(th_sas_parse(t, strlen(t), &tok, &err), TH_ERR_FORMAT);
    assert_string_equal(err.message, "SAS token has no 'sr' field");
}

static void test_th_sas_parse_missing_sig_fails(void **state)
{
    (void)state;
    const char *t = "SharedAccessSignature sr=h&se=1";
    struct th_sas_token tok;
    struct th_error err = {0};
    assert_int_equal(th_sas_parse(t, strlen(t), &tok, &err), TH_ERR_FORMAT);
    assert_string_equal(err.message, "SAS token has no 'sig' field");
}

static void test_th_sas_parse_empty_sig_fails(void **state)
{
    (void)state;
    const char *t = "SharedAccessSignature sr=h&sig=&se=1";
    struct th_sas_token tok;
    assert_int_equal(th_sas_parse(t, strlen(t), &tok, NULL), TH_ERR_FORMAT);
}

static void test_th_sas_parse_repeated_field_fails(void **state)
{
    (void)state;
    const char *t = "SharedAccessSignature sr=h&sig=s&se=1&sr=other";
    struct th_sas_token tok;
    struct th_error err = {0};
    assert_int_equal(th_sas_parse(t, strlen(t), &tok, &err), TH_ERR_FORMAT);
    assert_non_null(strstr(err.message, "'sr'"));
}

static void test_th_sas_parse_negative_se_fails(void **state)
{
    (void)state;
    const char *t = "SharedAccessSignature sr=h&sig=s&se=-5";
    struct th_sas_token tok;
    assert_int_equal(th_sas_parse(t, strlen(t), &tok, NULL), TH_ERR_FORMAT);
}

static void test_th_sas_parse_non_numeric_se_fails(void **state)
{
    (void)state;
    const char *t = "SharedAccessSignature sr=h&sig=s&se=17e8";
    struct th_sas_token tok;
    assert_int_equal(th_sas_parse(t, strlen(t), &tok, NULL), TH_ERR_FORMAT);
}

static void test_th_sas_parse_overflowing_se_fails(void **state)
{
    (void)state;
    const char *t = "SharedAccessSignature sr=h&sig=s&se=9223372036854775808";
    struct th_sas_token tok;
    assert_int_equal(th_sas_parse(t, strlen(t), &tok, NULL), TH_ERR_FORMAT);
}

static void test_th_sas_parse_field_without_equals_fails(void **state)
{
    (void)state;
    const char *t = "SharedAccessSignature sr=h&sig=s&se=1&bogus";
    struct th_sas_token tok;
    assert_int_equal(th_sas_parse(t, strlen(t), &tok, NULL), TH_ERR_FORMAT);
}

/* ---- verify: the four vectors of iothub-protocol.md 2.2 ---- */

static void test_th_sas_verify_vector_device_succeeds(void **state)
{
    (void)state;
    struct th_error err = {0};
    assert_int_equal(parse_and_verify(ROW1_TOKEN, KEY, &err), TH_OK);
}

static void test_th_sas_verify_vector_lower_case_sr_succeeds(void **state)
{
    (void)state;
    struct th_error err = {0};
    assert_int_equal(parse_and_verify(ROW2_TOKEN, KEY, &err), TH_OK);
}

static void test_th_sas_verify_vector_module_succeeds(void **state)
{
    (void)state;
    struct th_error err = {0};
    assert_int_equal(parse_and_verify(ROW3_TOKEN, KEY, &err), TH_OK);
}

static void test_th_sas_verify_vector_service_succeeds(void **state)
{
    (void)state;
    struct th_error err = {0};
    assert_int_equal(parse_and_verify(ROW4_TOKEN, KEY, &err), TH_OK);
}

/* ---- verify: client variants ---- */

static void test_th_sas_verify_lower_case_sig_escapes_succeeds(void **state)
{
    (void)state;
    const char *t = "SharedAccessSignature sr=contoso.azure-devices.net%2Fdevices%2Fdev1"
                    "&sig=QKiSs%2fj3XsPN5ctMtRoJa7c%2bYA9RuV2Hs4XwTyXK8%2bw%3d&se=1700000000";
    assert_int_equal(parse_and_verify(t, KEY, NULL), TH_OK);
}

static void test_th_sas_verify_unencoded_sig_succeeds(void **state)
{
    (void)state;
    const char *t = "SharedAccessSignature sr=contoso.azure-devices.net%2Fdevices%2Fdev1"
                    "&sig=QKiSs/j3XsPN5ctMtRoJa7c+YA9RuV2Hs4XwTyXK8+w=&se=1700000000";
    assert_int_equal(parse_and_verify(t, KEY, NULL), TH_OK);
}

static void test_th_sas_verify_raw_sr_full_c_sdk_succeeds(void **state)
{
    (void)state;
    /* Full C SDK: sr not encoded, signed raw; sig escapes lower case. */
    const char *t = "SharedAccessSignature sr=127.0.0.1/devices/pnp2"
                    "&sig=L5M%2bQgiGQIsLkzUUpzJXwws1%2bgQirK6PiiRCz1bQRYM%3d&se=1700000000";
    assert_int_equal(parse_and_verify(t, KEY, NULL), TH_OK);
}

static void test_th_sas_verify_lower_case_sr_with_upper_case_sig_fails(void **state)
{
    (void)state;
    /* Row 1's signature does not cover row 2's lower-case sr. */
    const char *t = "SharedAccessSignature sr=contoso.azure-devices.net%2fdevices%2fdev1"
                    "&sig=QKiSs%2Fj3XsPN5ctMtRoJa7c%2BYA9RuV2Hs4XwTyXK8%2Bw%3D&se=1700000000";
    struct th_error err = {0};
    assert_int_equal(parse_and_verify(t, KEY, &err), TH_ERR_AUTH);
}

static void test_th_sas_verify_tampered_sig_fails(void **state)
{
    (void)state;
    const char *t = "SharedAccessSignature sr=contoso.azure-devices.net%2Fdevices%2Fdev1"
                    "&sig=QKiSs%2Fj3XsPN5ctMtRoJa7d%2BYA9RuV2Hs4XwTyXK8%2Bw%3D&se=1700000000";
    struct th_error err = {0};
    assert_int_equal(parse_and_verify(t, KEY, &err), TH_ERR_AUTH);
    assert_int_equal(err.code, 401002);
    assert_string_equal(err.message, "SAS signature does not match the identity's keys");
}

static void test_th_sas_verify_sig_spare_bits_ignored_succeeds(void **state)
{
    (void)state;
    /*
     * The last base64 digit of a 32-byte MAC carries 2 spare bits: "w" and
     * "x" decode to the same bytes, and the bytes are what is compared (as
     * .NET's Convert.FromBase64String does). Not a forgery: the MAC is equal.
     */
    const char *t = "SharedAccessSignature sr=contoso.azure-devices.net%2Fdevices%2Fdev1"
                    "&sig=QKiSs%2Fj3XsPN5ctMtRoJa7c%2BYA9RuV2Hs4XwTyXK8%2Bx%3D&se=1700000000";
    assert_int_equal(parse_and_verify(t, KEY, NULL), TH_OK);
}

static void test_th_sas_verify_tampered_se_fails(void **state)
{
    (void)state;
    /* A later expiry with the old signature. */
    const char *t = "SharedAccessSignature sr=contoso.azure-devices.net%2Fdevices%2Fdev1"
                    "&sig=QKiSs%2Fj3XsPN5ctMtRoJa7c%2BYA9RuV2Hs4XwTyXK8%2Bw%3D&se=1800000000";
    assert_int_equal(parse_and_verify(t, KEY, NULL), TH_ERR_AUTH);
}

static void test_th_sas_verify_tampered_sr_fails(void **state)
{
    (void)state;
    const char *t = "SharedAccessSignature sr=contoso.azure-devices.net%2Fdevices%2Fdev2"
                    "&sig=QKiSs%2Fj3XsPN5ctMtRoJa7c%2BYA9RuV2Hs4XwTyXK8%2Bw%3D&se=1700000000";
    assert_int_equal(parse_and_verify(t, KEY, NULL), TH_ERR_AUTH);
}

static void test_th_sas_verify_wrong_key_fails(void **state)
{
    (void)state;
    struct th_error err = {0};
    assert_int_equal(parse_and_verify(ROW1_TOKEN, OTHER_KEY, &err), TH_ERR_AUTH);
    assert_int_equal(err.result, TH_ERR_AUTH);
}

static void test_th_sas_verify_key_text_as_hmac_key_fails(void **state)
{
    (void)state;
    /* The classic mistake: "QUFF..." is base64 of the key text, not the key. */
    assert_int_equal(
        parse_and_verify(ROW1_TOKEN,
                         "QUFFQ0F3UUZCZ2NJQ1FvTERBME9EeEFSRWhNVUZSWVhHQmthR3h3ZEhoOD0=", NULL),
        TH_ERR_AUTH);
}

static void test_th_sas_verify_sig_not_base64_fails(void **state)
{
    (void)state;
    const char *t = "SharedAccessSignature sr=h&sig=not*base64&se=1700000000";
    struct th_error err = {0};
    assert_int_equal(parse_and_verify(t, KEY, &err), TH_ERR_AUTH);
    assert_non_null(strstr(err.message, "'sig'"));
}

static void test_th_sas_verify_bad_key_fails(void **state)
{
    (void)state;
    struct th_error err = {0};
    assert_int_equal(parse_and_verify(ROW1_TOKEN, "not a key", &err), TH_ERR_INVAL);
}

static void test_th_sas_verify_expired_fails(void **state)
{
    (void)state;
    struct th_sas_token tok;
    struct th_error err = {0};
    assert_int_equal(th_sas_parse(ROW1_TOKEN, strlen(ROW1_TOKEN), &tok, NULL), TH_OK);
    assert_int_equal(th_sas_verify(&tok, KEY, SE + 1, 0, &err), TH_ERR_EXPIRED);
    assert_int_equal(err.result, TH_ERR_EXPIRED);
    assert_int_equal(err.code, 401002);
    assert_non_null(strstr(err.message, "expired at 2023-11-14T22:13:20"));
    assert_non_null(strstr(err.message, "now 2023-11-14T22:13:21"));
}

static void test_th_sas_verify_expired_within_skew_succeeds(void **state)
{
    (void)state;
    struct th_sas_token tok;
    assert_int_equal(th_sas_parse(ROW1_TOKEN, strlen(ROW1_TOKEN), &tok, NULL), TH_OK);
    assert_int_equal(th_sas_verify(&tok, KEY, SE + 300, 300, NULL), TH_OK);
    assert_int_equal(th_sas_verify(&tok, KEY, SE + 301, 300, NULL), TH_ERR_EXPIRED);
}

/* Regression (fuzz_sas): a huge configured skew or clock overflowed int64 arithmetic (UB). */
static void test_th_sas_verify_extreme_skew_and_clock_succeeds(void **state)
{
    (void)state;
    struct th_sas_token tok;
    struct th_error err = {0};
    assert_int_equal(th_sas_parse(ROW1_TOKEN, strlen(ROW1_TOKEN), &tok, NULL), TH_OK);
    assert_int_equal(th_sas_verify(&tok, KEY, INT64_MAX / 2, -(INT64_MAX / 4), &err),
                     TH_ERR_EXPIRED);
    assert_non_null(strstr(err.message, "expired at 2023-11-14T22:13:20"));
    assert_int_equal(th_sas_verify(&tok, KEY, INT64_MAX, INT64_MIN, NULL), TH_ERR_EXPIRED);
    assert_int_equal(th_sas_verify(&tok, KEY, INT64_MIN, INT64_MAX, NULL), TH_OK);
    assert_int_equal(th_sas_verify(&tok, KEY, SE + 10, INT64_MAX, NULL), TH_OK);
}

static void test_th_sas_verify_bad_sig_before_expiry_fails(void **state)
{
    (void)state;
    /* Signature is checked first: an expired token with a wrong key is AUTH. */
    struct th_sas_token tok;
    assert_int_equal(th_sas_parse(ROW1_TOKEN, strlen(ROW1_TOKEN), &tok, NULL), TH_OK);
    assert_int_equal(th_sas_verify(&tok, OTHER_KEY, SE + 100, 0, NULL), TH_ERR_AUTH);
}

/* ---- resource ---- */

static th_result resource_of(const char *token, struct th_sas_resource *res, struct th_error *err)
{
    struct th_sas_token tok;
    th_result r = th_sas_parse(token, strlen(token), &tok, err);
    if (r != TH_OK)
        return r;
    return th_sas_resource(&tok, res, err);
}

static void test_th_sas_resource_device_succeeds(void **state)
{
    (void)state;
    struct th_sas_resource res;
    assert_int_equal(resource_of(ROW1_TOKEN, &res, NULL), TH_OK);
    assert_string_equal(res.host, "contoso.azure-devices.net");
    assert_string_equal(res.device_id, "dev1");
    assert_string_equal(res.module_id, "");
    assert_false(res.all_devices);
}

static void test_th_sas_resource_lower_case_escapes_succeeds(void **state)
{
    (void)state;
    struct th_sas_resource res;
    assert_int_equal(resource_of(ROW2_TOKEN, &res, NULL), TH_OK);
    assert_string_equal(res.host, "contoso.azure-devices.net");
    assert_string_equal(res.device_id, "dev1");
}

static void test_th_sas_resource_module_succeeds(void **state)
{
    (void)state;
    struct th_sas_resource res;
    assert_int_equal(resource_of(ROW3_TOKEN, &res, NULL), TH_OK);
    assert_string_equal(res.host, "contoso.azure-devices.net");
    assert_string_equal(res.device_id, "dev1");
    assert_string_equal(res.module_id, "mod1");
    assert_false(res.all_devices);
}

static void test_th_sas_resource_bare_host_succeeds(void **state)
{
    (void)state;
    struct th_sas_resource res;
    assert_int_equal(resource_of(ROW4_TOKEN, &res, NULL), TH_OK);
    assert_string_equal(res.host, "contoso.azure-devices.net");
    assert_string_equal(res.device_id, "");
    assert_false(res.all_devices);
}

static void test_th_sas_resource_all_devices_succeeds(void **state)
{
    (void)state;
    struct th_sas_resource res;
    assert_int_equal(resource_of("SharedAccessSignature sr=h.net%2Fdevices&sig=s&se=1", &res, NULL),
                     TH_OK);
    assert_string_equal(res.host, "h.net");
    assert_string_equal(res.device_id, "");
    assert_true(res.all_devices);
}

static void test_th_sas_resource_raw_sr_succeeds(void **state)
{
    (void)state;
    struct th_sas_resource res;
    assert_int_equal(
        resource_of("SharedAccessSignature sr=127.0.0.1/devices/pnp2&sig=s&se=1", &res, NULL),
        TH_OK);
    assert_string_equal(res.host, "127.0.0.1");
    assert_string_equal(res.device_id, "pnp2");
}

static void test_th_sas_resource_raw_sr_keeps_percent_succeeds(void **state)
{
    (void)state;
    /* An unencoded sr is not decoded: '%41' in an id stays as sent. */
    struct th_sas_resource res;
    assert_int_equal(resource_of("SharedAccessSignature sr=h/devices/a%41b&sig=s&se=1", &res, NULL),
                     TH_OK);
    assert_string_equal(res.device_id, "a%41b");
}

static void test_th_sas_resource_host_with_port_succeeds(void **state)
{
    (void)state;
    struct th_sas_resource res;
    assert_int_equal(resource_of("SharedAccessSignature sr=localhost%3A18883%2Fdevices%2Fdev2"
                                 "&sig=s&se=1",
                                 &res, NULL),
                     TH_OK);
    assert_string_equal(res.host, "localhost:18883");
    assert_string_equal(res.device_id, "dev2");
}

static void test_th_sas_resource_trailing_slash_succeeds(void **state)
{
    (void)state;
    struct th_sas_resource res;
    assert_int_equal(
        resource_of("SharedAccessSignature sr=h%2Fdevices%2Fd1%2F&sig=s&se=1", &res, NULL), TH_OK);
    assert_string_equal(res.device_id, "d1");
}

static void test_th_sas_resource_extra_segment_fails(void **state)
{
    (void)state;
    struct th_sas_resource res;
    struct th_error err = {0};
    assert_int_equal(resource_of("SharedAccessSignature sr=h%2Fdevices%2Fd1%2Fapi-version%3D2016"
                                 "&sig=s&se=1",
                                 &res, &err),
                     TH_ERR_FORMAT);
    assert_int_equal(err.code, 401002);
    assert_non_null(strstr(err.message, "h/devices/d1/api-version=2016"));
    assert_string_equal(res.host, "");
}

static void test_th_sas_resource_singular_module_fails(void **state)
{
    (void)state;
    struct th_sas_resource res;
    assert_int_equal(resource_of("SharedAccessSignature sr=h%2Fdevices%2Fd1%2Fmodule%2Fm1"
                                 "&sig=s&se=1",
                                 &res, NULL),
                     TH_ERR_FORMAT);
}

static void test_th_sas_resource_other_path_fails(void **state)
{
    (void)state;
    struct th_sas_resource res;
    assert_int_equal(resource_of("SharedAccessSignature sr=h%2Ftwins%2Fd1&sig=s&se=1", &res, NULL),
                     TH_ERR_FORMAT);
    assert_int_equal(
        resource_of("SharedAccessSignature sr=h%2Fdevices%2Fd1%2Fmodules&sig=s&se=1", &res, NULL),
        TH_ERR_FORMAT);
    assert_int_equal(resource_of("SharedAccessSignature sr=%2Fdevices%2Fd1&sig=s&se=1", &res, NULL),
                     TH_ERR_FORMAT);
}

static void test_th_sas_resource_empty_device_fails(void **state)
{
    (void)state;
    struct th_sas_resource res;
    assert_int_equal(
        resource_of("SharedAccessSignature sr=h%2Fdevices%2F%2Fmodules%2Fm&sig=s&se=1", &res, NULL),
        TH_ERR_FORMAT);
}

static void test_th_sas_resource_encoded_nul_fails(void **state)
{
    (void)state;
    struct th_sas_resource res;
    assert_int_equal(
        resource_of("SharedAccessSignature sr=h%2Fdevices%2Fd1%00x&sig=s&se=1", &res, NULL),
        TH_ERR_FORMAT);
}

static void test_th_sas_resource_broken_escape_fails(void **state)
{
    (void)state;
    struct th_sas_resource res;
    assert_int_equal(
        resource_of("SharedAccessSignature sr=h%2Fdevices%2Fd%G1&sig=s&se=1", &res, NULL),
        TH_ERR_FORMAT);
}

static void test_th_sas_resource_long_id_fails(void **state)
{
    (void)state;
    char token[512];
    char id[130];
    memset(id, 'a', 129);
    id[129] = '\0';
    snprintf(token, sizeof(token), "SharedAccessSignature sr=h%%2Fdevices%%2F%s&sig=s&se=1", id);
    struct th_sas_resource res;
    assert_int_equal(resource_of(token, &res, NULL), TH_ERR_FORMAT);
    id[128] = '\0';
    snprintf(token, sizeof(token), "SharedAccessSignature sr=h%%2Fdevices%%2F%s&sig=s&se=1", id);
    assert_int_equal(resource_of(token, &res, NULL), TH_OK);
    assert_int_equal(strlen(res.device_id), 128);
}

/* ---- sign ---- */

static void test_th_sas_sign_vector_device_succeeds(void **state)
{
    (void)state;
    char buf[256];
    assert_int_equal(
        th_sas_sign("contoso.azure-devices.net/devices/dev1", KEY, SE, NULL, buf, sizeof(buf)),
        TH_OK);
    assert_string_equal(buf, ROW1_TOKEN);
}

static void test_th_sas_sign_with_skn_succeeds(void **state)
{
    (void)state;
    char buf[256];
    assert_int_equal(
        th_sas_sign("contoso.azure-devices.net", KEY, SE, "iothubowner", buf, sizeof(buf)), TH_OK);
    assert_string_equal(buf, ROW4_TOKEN);
}

static void test_th_sas_sign_roundtrip_module_succeeds(void **state)
{
    (void)state;
    char buf[256];
    assert_int_equal(
        th_sas_sign("h.net/devices/d1/modules/$edgeHub", OTHER_KEY, SE, NULL, buf, sizeof(buf)),
        TH_OK);
    assert_int_equal(parse_and_verify(buf, OTHER_KEY, NULL), TH_OK);
    struct th_sas_resource res;
    assert_int_equal(resource_of(buf, &res, NULL), TH_OK);
    assert_string_equal(res.device_id, "d1");
    assert_string_equal(res.module_id, "$edgeHub");
}

static void test_th_sas_sign_buffer_too_small_fails(void **state)
{
    (void)state;
    char buf[sizeof(ROW1_TOKEN)];
    assert_int_equal(th_sas_sign("contoso.azure-devices.net/devices/dev1", KEY, SE, NULL, buf,
                                 sizeof(ROW1_TOKEN)),
                     TH_OK);
    assert_int_equal(th_sas_sign("contoso.azure-devices.net/devices/dev1", KEY, SE, NULL, buf,
                                 sizeof(ROW1_TOKEN) - 1),
                     TH_ERR_BUFFER);
    assert_string_equal(buf, "");
}

static void test_th_sas_sign_bad_key_fails(void **state)
{
    (void)state;
    char buf[256];
    assert_int_equal(th_sas_sign("h/devices/d", "%%%", SE, NULL, buf, sizeof(buf)), TH_ERR_INVAL);
    assert_int_equal(th_sas_sign("h/devices/d", "", SE, NULL, buf, sizeof(buf)), TH_ERR_INVAL);
}

static void test_th_sas_sign_bad_policy_name_fails(void **state)
{
    (void)state;
    char buf[256];
    assert_int_equal(th_sas_sign("h", KEY, SE, "a&b", buf, sizeof(buf)), TH_ERR_INVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_sas_parse_row1_token_succeeds),
        cmocka_unit_test(test_th_sas_parse_any_field_order_succeeds),
        cmocka_unit_test(test_th_sas_parse_unknown_field_ignored_succeeds),
        cmocka_unit_test(test_th_sas_parse_respects_len_succeeds),
        cmocka_unit_test(test_th_sas_parse_missing_prefix_fails),
        cmocka_unit_test(test_th_sas_parse_missing_se_fails),
        cmocka_unit_test(test_th_sas_parse_missing_sr_fails),
        cmocka_unit_test(test_th_sas_parse_missing_sig_fails),
        cmocka_unit_test(test_th_sas_parse_empty_sig_fails),
        cmocka_unit_test(test_th_sas_parse_repeated_field_fails),
        cmocka_unit_test(test_th_sas_parse_negative_se_fails),
        cmocka_unit_test(test_th_sas_parse_non_numeric_se_fails),
        cmocka_unit_test(test_th_sas_parse_overflowing_se_fails),
        cmocka_unit_test(test_th_sas_parse_field_without_equals_fails),
        cmocka_unit_test(test_th_sas_verify_vector_device_succeeds),
        cmocka_unit_test(test_th_sas_verify_vector_lower_case_sr_succeeds),
        cmocka_unit_test(test_th_sas_verify_vector_module_succeeds),
        cmocka_unit_test(test_th_sas_verify_vector_service_succeeds),
        cmocka_unit_test(test_th_sas_verify_lower_case_sig_escapes_succeeds),
        cmocka_unit_test(test_th_sas_verify_unencoded_sig_succeeds),
        cmocka_unit_test(test_th_sas_verify_raw_sr_full_c_sdk_succeeds),
        cmocka_unit_test(test_th_sas_verify_lower_case_sr_with_upper_case_sig_fails),
        cmocka_unit_test(test_th_sas_verify_tampered_sig_fails),
        cmocka_unit_test(test_th_sas_verify_sig_spare_bits_ignored_succeeds),
        cmocka_unit_test(test_th_sas_verify_tampered_se_fails),
        cmocka_unit_test(test_th_sas_verify_tampered_sr_fails),
        cmocka_unit_test(test_th_sas_verify_wrong_key_fails),
        cmocka_unit_test(test_th_sas_verify_key_text_as_hmac_key_fails),
        cmocka_unit_test(test_th_sas_verify_sig_not_base64_fails),
        cmocka_unit_test(test_th_sas_verify_bad_key_fails),
        cmocka_unit_test(test_th_sas_verify_expired_fails),
        cmocka_unit_test(test_th_sas_verify_expired_within_skew_succeeds),
        cmocka_unit_test(test_th_sas_verify_extreme_skew_and_clock_succeeds),
        cmocka_unit_test(test_th_sas_verify_bad_sig_before_expiry_fails),
        cmocka_unit_test(test_th_sas_resource_device_succeeds),
        cmocka_unit_test(test_th_sas_resource_lower_case_escapes_succeeds),
        cmocka_unit_test(test_th_sas_resource_module_succeeds),
        cmocka_unit_test(test_th_sas_resource_bare_host_succeeds),
        cmocka_unit_test(test_th_sas_resource_all_devices_succeeds),
        cmocka_unit_test(test_th_sas_resource_raw_sr_succeeds),
        cmocka_unit_test(test_th_sas_resource_raw_sr_keeps_percent_succeeds),
        cmocka_unit_test(test_th_sas_resource_host_with_port_succeeds),
        cmocka_unit_test(test_th_sas_resource_trailing_slash_succeeds),
        cmocka_unit_test(test_th_sas_resource_extra_segment_fails),
        cmocka_unit_test(test_th_sas_resource_singular_module_fails),
        cmocka_unit_test(test_th_sas_resource_other_path_fails),
        cmocka_unit_test(test_th_sas_resource_empty_device_fails),
        cmocka_unit_test(test_th_sas_resource_encoded_nul_fails),
        cmocka_unit_test(test_th_sas_resource_broken_escape_fails),
        cmocka_unit_test(test_th_sas_resource_long_id_fails),
        cmocka_unit_test(test_th_sas_sign_vector_device_succeeds),
        cmocka_unit_test(test_th_sas_sign_with_skn_succeeds),
        cmocka_unit_test(test_th_sas_sign_roundtrip_module_succeeds),
        cmocka_unit_test(test_th_sas_sign_buffer_too_small_fails),
        cmocka_unit_test(test_th_sas_sign_bad_key_fails),
        cmocka_unit_test(test_th_sas_sign_bad_policy_name_fails),
    };
    return cmocka_run_group_tests_name("sas", tests, NULL, NULL);
}
