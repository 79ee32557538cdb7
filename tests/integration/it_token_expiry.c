/*
 * it_token_expiry.c - a SAS connection is closed once its token runs out
 * (iothub-protocol.md section 3.2: the hub disconnects a device whose token
 * expired), against the real broker + plugin. The plugin's expiry scan waits
 * for the earliest token of a live connection (broker/conn.c); these tests
 * pin that a later, earlier-expiring connection still lowers that wait, and
 * that after one kick the next-earliest token is still found.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

/* Tokens run out 3 and 5 s after CONNECT (time enough to connect under a sanitizer); this
 * bounds their expiry and the 200 ms scan that closes them. */
#define EXPIRY_WAIT_MS 15000

static struct it_hub hub;

static int group_setup(void **state)
{
    (void)state;
    return it_hub_start(&hub);
}

static int group_teardown(void **state)
{
    (void)state;
    return it_hub_stop(&hub);
}

/* A device connection whose token expires at `expiry` (seconds); fails unless CONNACK is 0. */
static struct it_client *device_until(const char *device_id, const char *key, long long expiry)
{
    char *tok = it_device_token(hub.hub_name, device_id, NULL, key, expiry);
    char *user = it_device_username(hub.hub_name, device_id, NULL);
    struct it_connect_opts o = {.client_id = device_id, .username = user, .password = tok};
    int connack = -1;
    struct it_client *c = it_client_connect(&hub, &o, &connack);
    assert_int_equal(connack, 0);
    free(tok);
    free(user);
    return c;
}

static void test_scan_expired_short_tokens_closed_long_kept_succeeds(void **state)
{
    (void)state;
    /* First a long token (the scan then has nothing to wait for before it), then two short
     * ones, the later-expiring one first: each must lower the wait, and the second must still
     * be found after the first was closed. */
    struct it_client *keep = it_device_open(&hub, IT_DEV1, NULL, IT_DEV1_KEY);
    long long now = (long long)time(NULL);
    struct it_client *later = device_until(IT_DEV3, IT_DEV3_KEY, now + 5);
    struct it_client *sooner = device_until(IT_DEV2, IT_DEV2_KEY, now + 3);

    assert_true(it_client_wait_disconnect(sooner, EXPIRY_WAIT_MS));
    assert_true(it_client_wait_disconnect(later, EXPIRY_WAIT_MS));
    assert_true((long long)time(NULL) > now + 5);

    /* The long-lived connection is untouched: it still gets a twin answer. */
    int status = 0;
    struct it_msg *m = it_twin_request(keep, "1", NULL, &status);
    assert_non_null(m);
    assert_int_equal(status, 200);
    assert_true(it_client_is_connected(keep));
    it_msg_free(m);
    it_client_close(sooner);
    it_client_close(later);
    it_client_close(keep);
}

static void test_scan_expired_token_of_reconnected_device_closed_succeeds(void **state)
{
    (void)state;
    /* After a scan found nothing due (only long tokens left), a new short token must still
     * be closed: the wait is lowered by every CONNECT, not only by the first. */
    struct it_client *keep = it_device_open(&hub, IT_DEV1, NULL, IT_DEV1_KEY);
    struct it_client *c = device_until(IT_DEV4, IT_DEV4_KEY, (long long)time(NULL) + 3);
    assert_true(it_client_wait_disconnect(c, EXPIRY_WAIT_MS));
    assert_true(it_client_is_connected(keep));
    it_client_close(c);
    it_client_close(keep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_expired_short_tokens_closed_long_kept_succeeds),
        cmocka_unit_test(test_scan_expired_token_of_reconnected_device_closed_succeeds),
    };
    return cmocka_run_group_tests_name("it_token_expiry", tests, group_setup, group_teardown);
}
