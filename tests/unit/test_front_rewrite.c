/*
 * test_front_rewrite.c - core/front_rewrite.h: the first packet of a TLS
 * connection as the TLS shim and the WebSocket bridge hand it to the broker.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "front_rewrite.h"
#include "mqtt_connect.h"
#include "x509.h"
#include "x509_fixture.h"

#define DAY 86400L
static const uint8_t SECRET[TH_X509_SECRET_LEN] = "0123456789abcdef0123456789abcdef";
static const char DPS_USER[] = "0ne00000001/registrations/dev-1/api-version=2019-03-31";

/* A CONNECT with `cid`, `user` (NULL: none), `pass` (NULL: none) and a will; malloc'd. */
static uint8_t *connect_pkt(const char *cid, const char *user, const char *pass, size_t *len)
{
    struct th_mqtt_connect c = {
        .protocol_name = {(const uint8_t *)"MQTT", 4},
        .level = 4,
        .flags = TH_MQTT_CF_CLEAN | TH_MQTT_CF_WILL,
        .keep_alive = 240,
        .client_id = {(const uint8_t *)cid, strlen(cid)},
        .will_topic = {(const uint8_t *)"w/t", 3},
        .will_payload = {(const uint8_t *)"bye", 3},
        .has_username = user != NULL,
        .username = {(const uint8_t *)user, user ? strlen(user) : 0},
        .has_password = pass != NULL,
        .password = {(const uint8_t *)pass, pass ? strlen(pass) : 0},
    };
    size_t cap = th_mqtt_connect_size(&c);
    uint8_t *out = malloc(cap);
    assert_non_null(out);
    assert_int_equal(th_mqtt_connect_write(&c, out, cap, len), TH_OK);
    return out;
}

static bool same(struct th_bytes a, const char *s)
{
    return a.len == strlen(s) && memcmp(a.ptr, s, a.len) == 0;
}

static void test_th_front_rewrite_connect_certificate_adds_credential_succeeds(void **state)
{
    (void)state;
    struct fx_cert c = fx_make("d1", NULL, false, -60, DAY);
    size_t dlen, len, olen = 0;
    unsigned char *der = fx_der(&c, &dlen);
    struct th_x509_der chain[1] = {{der, dlen}};
    uint8_t *pk = connect_pkt("d1", "h/d1/?api-version=1", NULL, &len), *out = NULL;
    assert_int_equal(th_front_rewrite_connect(SECRET, chain, 1, pk, len, &out, &olen), 1);
    struct th_mqtt_connect r;
    assert_int_equal(th_mqtt_connect_parse(out, olen, &r), TH_OK);
    assert_true(same(r.client_id, "d1") && same(r.username, "h/d1/?api-version=1"));
    assert_true(same(r.will_topic, "w/t") && same(r.will_payload, "bye"));
    assert_int_equal(r.keep_alive, 240);
    assert_true(r.has_password);
    /* The plugin opens it with the same secret, client id and username. */
    char *pw = calloc(1, r.password.len + 1), reason[TH_X509_REASON_BUF];
    assert_non_null(pw);
    memcpy(pw, r.password.ptr, r.password.len);
    struct th_x509_chain *ch = NULL;
    assert_int_equal(th_x509_cred_open(SECRET, sizeof SECRET, "d1", "h/d1/?api-version=1", pw, &ch,
                                       reason, sizeof reason),
                     TH_OK);
    assert_int_equal(th_x509_chain_count(ch), 1);
    th_x509_chain_free(ch);
    free(pw);
    free(out);
    free(pk);
    OPENSSL_free(der);
    fx_free(&c);
}

static void test_th_front_rewrite_connect_dps_client_id_succeeds(void **state)
{
    (void)state;
    size_t len, olen = 0;
    uint8_t *pk = connect_pkt("dev-1", DPS_USER, "sas-token", &len), *out = NULL;
    /* No certificate: only the client id changes; the password stays. */
    assert_int_equal(th_front_rewrite_connect(SECRET, NULL, 0, pk, len, &out, &olen), 1);
    struct th_mqtt_connect r;
    assert_int_equal(th_mqtt_connect_parse(out, olen, &r), TH_OK);
    assert_true(same(r.client_id, "~dps/dev-1") && same(r.username, DPS_USER));
    assert_true(r.has_password && same(r.password, "sas-token"));
    free(out);
    free(pk);
}

static void test_th_front_rewrite_connect_unchanged_succeeds(void **state)
{
    (void)state;
    struct fx_cert c = fx_make("d1", NULL, false, -60, DAY);
    size_t dlen, len, olen = 0;
    unsigned char *der = fx_der(&c, &dlen);
    struct th_x509_der chain[1] = {{der, dlen}};
    uint8_t *out = NULL;
    /* A password (SAS) with a certificate; no username; no secret; no certificate. */
    uint8_t *pk = connect_pkt("d1", "h/d1/?api-version=1", "sas", &len);
    assert_int_equal(th_front_rewrite_connect(SECRET, chain, 1, pk, len, &out, &olen), 0);
    free(pk);
    pk = connect_pkt("d1", NULL, NULL, &len);
    assert_int_equal(th_front_rewrite_connect(SECRET, chain, 1, pk, len, &out, &olen), 0);
    free(pk);
    pk = connect_pkt("d1", "h/d1/?api-version=1", NULL, &len);
    assert_int_equal(th_front_rewrite_connect(NULL, chain, 1, pk, len, &out, &olen), 0);
    assert_int_equal(th_front_rewrite_connect(SECRET, NULL, 0, pk, len, &out, &olen), 0);
    /* A truncated CONNECT and a packet that is not one pass as they are. */
    assert_int_equal(th_front_rewrite_connect(SECRET, chain, 1, pk, len - 1, &out, &olen), 0);
    static const uint8_t ping[2] = {0xc0, 0};
    assert_int_equal(th_front_rewrite_connect(SECRET, chain, 1, ping, 2, &out, &olen), 0);
    assert_null(out);
    free(pk);
    OPENSSL_free(der);
    fx_free(&c);
}

static void test_th_front_cred_without_certificate_fails(void **state)
{
    (void)state;
    char *cred = malloc(TH_FRONT_MAX_CRED);
    size_t clen = 0;
    assert_int_equal(th_front_cred(SECRET, (const uint8_t *)"d", 1, (const uint8_t *)"u", 1, NULL,
                                   0, cred, &clen),
                     TH_ERR_INVAL);
    free(cred);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_front_rewrite_connect_certificate_adds_credential_succeeds),
        cmocka_unit_test(test_th_front_rewrite_connect_dps_client_id_succeeds),
        cmocka_unit_test(test_th_front_rewrite_connect_unchanged_succeeds),
        cmocka_unit_test(test_th_front_cred_without_certificate_fails),
    };
    return cmocka_run_group_tests_name("front_rewrite", tests, NULL, NULL);
}
