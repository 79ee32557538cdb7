/*
 * hmac.c - HMAC-SHA256 from a SHA-256 fetched once (hmac.h says why).
 */
#include "hmac.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define BLOCK 64 /* SHA-256's block size */

static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256; /* until th_hmac_release; NULL: use HMAC() */

static void fetch_sha256(void)
{
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

void th_hmac_release(void)
{
    EVP_MD_free(sha256);
    sha256 = NULL;
}

/* SHA-256 of pad (one block) followed by data, into out. */
static int digest2(EVP_MD_CTX *c, const uint8_t pad[BLOCK], const void *data, size_t len,
                   uint8_t out[TH_HMAC_SHA256_LEN])
{
    unsigned int n = 0;
    return EVP_DigestInit_ex2(c, sha256, NULL) && EVP_DigestUpdate(c, pad, BLOCK) &&
           (len == 0 || EVP_DigestUpdate(c, data, len)) && EVP_DigestFinal_ex(c, out, &n) &&
           n == TH_HMAC_SHA256_LEN;
}

th_result th_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
                         uint8_t out[TH_HMAC_SHA256_LEN])
{
    static const uint8_t empty[1] = {0};
    pthread_once(&fetch_once, fetch_sha256);
    if (sha256 == NULL) {
        /* No provider fetch possible (should not happen): the one-shot call. */
        unsigned int n = 0;
        if (key_len > INT32_MAX)
            return TH_ERR_INVAL;
        if (!HMAC(EVP_sha256(), key ? key : empty, (int)key_len, msg ? msg : empty, msg_len, out,
                  &n) ||
            n != TH_HMAC_SHA256_LEN)
            return TH_ERR_NOMEM;
        return TH_OK;
    }
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (c == NULL)
        return TH_ERR_NOMEM;
    uint8_t k0[BLOCK] = {0}, pad[BLOCK], inner[TH_HMAC_SHA256_LEN], mac[TH_HMAC_SHA256_LEN];
    bool ok = true;
    if (key_len > BLOCK) {
        unsigned int n = 0;
        ok = EVP_DigestInit_ex2(c, sha256, NULL) && EVP_DigestUpdate(c, key, key_len) &&
             EVP_DigestFinal_ex(c, k0, &n);
    } else if (key_len) {
        memcpy(k0, key, key_len);
    }
    for (size_t i = 0; i < BLOCK; i++)
        pad[i] = k0[i] ^ 0x36;
    ok = ok && digest2(c, pad, msg, msg_len, inner);
    for (size_t i = 0; i < BLOCK; i++)
        pad[i] = k0[i] ^ 0x5c;
    ok = ok && digest2(c, pad, inner, sizeof inner, mac);
    EVP_MD_CTX_free(c);
    OPENSSL_cleanse(k0, sizeof k0);
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(inner, sizeof inner);
    if (!ok)
        return TH_ERR_NOMEM;
    memcpy(out, mac, sizeof mac);
    return TH_OK;
}
