/*
 * test_hmac.c - unit tests for emulator/core/hmac.c: the RFC 4231 test
 * vectors (short key, key longer than a block) and the same MAC as OpenSSL's
 * HMAC() for keys of every length from 0 to 200 bytes and random messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "hmac.h"

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static void test_th_hmac_sha256_rfc4231_vectors_succeeds(void **state)
{
    (void)state;
    uint8_t key[131], mac[TH_HMAC_SHA256_LEN];
    char text[2 * TH_HMAC_SHA256_LEN + 1];
    /* Test case 1: a 20-byte key of 0x0b, "Hi There". */
    memset(key, 0x0b, 20);
    assert_int_equal(th_hmac_sha256(key, 20, "Hi There", 8, mac), TH_OK);
    hex(mac, sizeof mac, text);
    assert_string_equal(text, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    /* Test case 2: key "Jefe". */
    assert_int_equal(th_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, mac), TH_OK);
    hex(mac, sizeof mac, text);
    assert_string_equal(text, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* Test case 6: a 131-byte key of 0xaa (longer than the block: hashed first). */
    memset(key, 0xaa, sizeof key);
    static const char msg6[] = "Test Using Larger Than Block-Size Key - Hash Key First";
    assert_int_equal(th_hmac_sha256(key, sizeof key, msg6, strlen(msg6), mac), TH_OK);
    hex(mac, sizeof mac, text);
    assert_string_equal(text, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

static void test_th_hmac_sha256_same_as_openssl_succeeds(void **state)
{
    (void)state;
    uint8_t key[200], msg[300];
    unsigned seed = 99;
    for (size_t i = 0; i < sizeof msg; i++) {
        seed = seed * 1103515245u + 12345u;
        msg[i] = (uint8_t)(seed >> 16);
        if (i < sizeof key)
            key[i] = (uint8_t)(seed >> 8);
    }
    for (size_t klen = 0; klen <= sizeof key; klen++) {
        size_t mlen = (klen * 7) % sizeof msg;
        uint8_t mine[TH_HMAC_SHA256_LEN], theirs[TH_HMAC_SHA256_LEN];
        unsigned int n = 0;
        assert_int_equal(th_hmac_sha256(key, klen, msg, mlen, mine), TH_OK);
        assert_non_null(HMAC(EVP_sha256(), key, (int)klen, msg, mlen, theirs, &n));
        assert_int_equal(n, TH_HMAC_SHA256_LEN);
        assert_memory_equal(mine, theirs, sizeof mine);
    }
    /* Empty key and message as NULL. */
    uint8_t a[TH_HMAC_SHA256_LEN], b[TH_HMAC_SHA256_LEN];
    unsigned int n = 0;
    assert_int_equal(th_hmac_sha256(NULL, 0, NULL, 0, a), TH_OK);
    assert_non_null(HMAC(EVP_sha256(), "", 0, (const uint8_t *)"", 0, b, &n));
    assert_memory_equal(a, b, sizeof a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_hmac_sha256_rfc4231_vectors_succeeds),
        cmocka_unit_test(test_th_hmac_sha256_same_as_openssl_succeeds),
    };
    return cmocka_run_group_tests_name("hmac", tests, NULL, NULL);
}
