/*
 * test_mqtt_connect.c - the MQTT CONNECT codec (core/mqtt_connect.h): packet
 * length, parse of 3.1.1 and 5 (with will, username, password), the rewrite
 * the TLS front makes (a password added), and malformed packets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mqtt_connect.h"

/* MQTT 3.1.1: client id "d1", username "h/d1/?api-version=x", no password, keep-alive 60. */
static const uint8_t v311[] = {
    0x10, 35,                                                         /* CONNECT, remaining 35 */
    0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x82, 0x00, 0x3c,           /* name, level, flags, ka */
    0x00, 0x02, 'd', '1',                                             /* client id */
    0x00, 0x13, 'h', '/', 'd', '1', '/',  '?',  'a',  'p',  'i', '-', /* username ... */
    'v',  'e',  'r', 's', 'i', 'o', 'n',  '=',  'x'};

/* MQTT 5: properties (session expiry 0x11 = 10), will with properties, username, password. */
static const uint8_t v5[] = {
    0x10, 41,   0x00, 0x04, 'M',  'Q',  'T', 'T', 0x05,
    0xc6, 0x00, 0x0a,                                  /* user, pass, will qos0, clean */
    0x05, 0x11, 0x00, 0x00, 0x00, 0x0a,                /* properties */
    0x00, 0x01, 'c',                                   /* client id */
    0x00,                                              /* will properties: none */
    0x00, 0x01, 't',  0x00, 0x02, 'w',  'p',           /* will topic, payload */
    0x00, 0x02, 'u',  's',  0x00, 0x03, 'p', 'w', 'd', /* username, password */
    0x00, 0x00, 0x00, 0x00, 0x00}; /* 5 stray bytes: cut by the tests that need a valid one */

static void test_th_mqtt_packet_length_short_and_long_succeeds(void **state)
{
    (void)state;
    size_t n = 0;
    assert_int_equal(th_mqtt_packet_length(v311, 1, &n), TH_ERR_BUFFER);
    assert_int_equal(th_mqtt_packet_length(v311, 2, &n), TH_OK);
    assert_int_equal(n, 37);
    const uint8_t two[] = {0x10, 0x80, 0x01};
    assert_int_equal(th_mqtt_packet_length(two, 2, &n), TH_ERR_BUFFER);
    assert_int_equal(th_mqtt_packet_length(two, 3, &n), TH_OK);
    assert_int_equal(n, 3 + 128);
}

static void test_th_mqtt_packet_length_five_bytes_fails(void **state)
{
    (void)state;
    const uint8_t bad[] = {0x10, 0xff, 0xff, 0xff, 0xff, 0x01};
    size_t n;
    assert_int_equal(th_mqtt_packet_length(bad, sizeof bad, &n), TH_ERR_FORMAT);
}

static void test_th_mqtt_connect_parse_v311_succeeds(void **state)
{
    (void)state;
    struct th_mqtt_connect c;
    assert_int_equal(th_mqtt_connect_parse(v311, sizeof v311, &c), TH_OK);
    assert_int_equal(c.level, 4);
    assert_int_equal(c.keep_alive, 60);
    assert_int_equal(c.client_id.len, 2);
    assert_memory_equal(c.client_id.ptr, "d1", 2);
    assert_true(c.has_username);
    assert_false(c.has_password);
    assert_int_equal(c.username.len, 19);
}

static void test_th_mqtt_connect_parse_v5_succeeds(void **state)
{
    (void)state;
    struct th_mqtt_connect c;
    size_t len = sizeof v5 - 5;
    uint8_t buf[64];
    memcpy(buf, v5, len);
    buf[1] = (uint8_t)(len - 2);
    assert_int_equal(th_mqtt_connect_parse(buf, len, &c), TH_OK);
    assert_int_equal(c.level, 5);
    assert_int_equal(c.properties.len, 5);
    assert_int_equal(c.will_properties.len, 0);
    assert_memory_equal(c.will_topic.ptr, "t", 1);
    assert_memory_equal(c.will_payload.ptr, "wp", 2);
    assert_memory_equal(c.password.ptr, "pwd", 3);
    /* Written back unchanged, it is the same bytes. */
    uint8_t out[64];
    size_t n = 0;
    assert_int_equal(th_mqtt_connect_write(&c, out, sizeof out, &n), TH_OK);
    assert_int_equal(n, len);
    assert_memory_equal(out, buf, len);
}

static void test_th_mqtt_connect_write_adds_password_succeeds(void **state)
{
    (void)state;
    struct th_mqtt_connect c;
    assert_int_equal(th_mqtt_connect_parse(v311, sizeof v311, &c), TH_OK);
    static const char pw[200] = "credential";
    c.has_password = true;
    c.password.ptr = (const uint8_t *)pw;
    c.password.len = sizeof pw;
    uint8_t out[512];
    size_t n = 0;
    assert_int_equal(th_mqtt_connect_write(&c, out, sizeof out, &n), TH_OK);
    assert_int_equal(n, th_mqtt_connect_size(&c));
    /* Remaining length grew past 127: two length bytes. */
    assert_int_equal(n, 1 + 2 + 35 + 2 + 200);
    struct th_mqtt_connect back;
    assert_int_equal(th_mqtt_connect_parse(out, n, &back), TH_OK);
    assert_true(back.has_password);
    assert_int_equal(back.flags & TH_MQTT_CF_PASSWORD, TH_MQTT_CF_PASSWORD);
    assert_int_equal(back.password.len, 200);
    assert_memory_equal(back.password.ptr, pw, 200);
    assert_memory_equal(back.client_id.ptr, "d1", 2);
    assert_int_equal(back.username.len, 19);
    assert_int_equal(back.keep_alive, 60);
}

static void test_th_mqtt_connect_write_new_client_id_succeeds(void **state)
{
    (void)state;
    struct th_mqtt_connect c;
    assert_int_equal(th_mqtt_connect_parse(v311, sizeof v311, &c), TH_OK);
    c.client_id.ptr = (const uint8_t *)"other-id";
    c.client_id.len = 8;
    uint8_t out[128];
    size_t n = 0;
    assert_int_equal(th_mqtt_connect_write(&c, out, sizeof out, &n), TH_OK);
    struct th_mqtt_connect back;
    assert_int_equal(th_mqtt_connect_parse(out, n, &back), TH_OK);
    assert_memory_equal(back.client_id.ptr, "other-id", 8);
}

static void test_th_mqtt_connect_write_small_buffer_fails(void **state)
{
    (void)state;
    struct th_mqtt_connect c;
    assert_int_equal(th_mqtt_connect_parse(v311, sizeof v311, &c), TH_OK);
    uint8_t out[16];
    size_t n = 0;
    assert_int_equal(th_mqtt_connect_write(&c, out, sizeof out, &n), TH_ERR_BUFFER);
    c.password.len = 70000;
    c.has_password = true;
    assert_int_equal(th_mqtt_connect_size(&c), 0);
}

static void test_th_mqtt_connect_parse_malformed_fails(void **state)
{
    (void)state;
    struct th_mqtt_connect c;
    uint8_t buf[sizeof v311];
    /* not a CONNECT */
    memcpy(buf, v311, sizeof buf);
    buf[0] = 0x30;
    assert_int_equal(th_mqtt_connect_parse(buf, sizeof buf, &c), TH_ERR_FORMAT);
    /* a truncated packet */
    assert_int_equal(th_mqtt_connect_parse(v311, sizeof v311 - 1, &c), TH_ERR_FORMAT);
    /* a username that runs past the packet */
    memcpy(buf, v311, sizeof buf);
    buf[17] = 0x40;
    assert_int_equal(th_mqtt_connect_parse(buf, sizeof buf, &c), TH_ERR_FORMAT);
    /* the reserved flag */
    memcpy(buf, v311, sizeof buf);
    buf[9] |= 0x01;
    assert_int_equal(th_mqtt_connect_parse(buf, sizeof buf, &c), TH_ERR_FORMAT);
    /* protocol level 6 */
    memcpy(buf, v311, sizeof buf);
    buf[8] = 6;
    assert_int_equal(th_mqtt_connect_parse(buf, sizeof buf, &c), TH_ERR_FORMAT);
    /* a password without a username at level 4 */
    memcpy(buf, v311, sizeof buf);
    buf[9] = 0x42;
    assert_int_equal(th_mqtt_connect_parse(buf, sizeof buf, &c), TH_ERR_FORMAT);
    /* bytes after the last field */
    assert_int_equal(th_mqtt_connect_parse(v5, sizeof v5, &c), TH_ERR_FORMAT);
    /* a length longer than it needs to be (0x84 0x00 is 4 in two bytes; fuzz_mqtt_connect) */
    static const uint8_t long_props[] = {0x10, 0x24, 0x00, 0x04, 'M',  'Q',  'T',  'T',  0x05,
                                         0x8c, 0x00, 0x05, 0x84, 0x00, 0x00, 0x00, 0x00, 0x0a,
                                         0x00, 0x01, 'c',  0x01, 0x00, 0x00, 0x00, 0x00, 0x06,
                                         'M',  'Q',  'I',  's',  'd',  'p',  0x00, 0x03, 'p',
                                         'w',  'd'};
    assert_int_equal(th_mqtt_connect_parse(long_props, sizeof long_props, &c), TH_ERR_FORMAT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_mqtt_packet_length_short_and_long_succeeds),
        cmocka_unit_test(test_th_mqtt_packet_length_five_bytes_fails),
        cmocka_unit_test(test_th_mqtt_connect_parse_v311_succeeds),
        cmocka_unit_test(test_th_mqtt_connect_parse_v5_succeeds),
        cmocka_unit_test(test_th_mqtt_connect_write_adds_password_succeeds),
        cmocka_unit_test(test_th_mqtt_connect_write_new_client_id_succeeds),
        cmocka_unit_test(test_th_mqtt_connect_write_small_buffer_fails),
        cmocka_unit_test(test_th_mqtt_connect_parse_malformed_fails),
    };
    return cmocka_run_group_tests_name("mqtt_connect", tests, NULL, NULL);
}
