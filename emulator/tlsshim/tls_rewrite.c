/*
 * tls_rewrite.c - the peer's certificates as DER for the first packet's
 * rewrite (tls_rewrite.h, core/front_rewrite.h).
 */
#include "tls_rewrite.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "front_rewrite.h"

/* The leaf, then what else the client sent (the server side's chain leaves the leaf out), as
 * DER into der[] (bufs[] own them: free with chain_free). The count; 0 without a certificate;
 * -1 on out of memory. */
static int peer_chain(SSL *ssl, struct th_x509_der *der, unsigned char **bufs)
{
    X509 *leaf = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    if (!leaf)
        return 0;
    STACK_OF(X509) *rest = SSL_get_peer_cert_chain(ssl);
    X509 *certs[TH_X509_MAX_CHAIN];
    int n = 0;
    certs[n++] = leaf;
    for (int i = 0; rest && i < sk_X509_num(rest) && n < TH_X509_MAX_CHAIN; i++) {
        X509 *x = sk_X509_value(rest, i);
        if (X509_cmp(x, leaf) != 0)
            certs[n++] = x;
    }
    for (int i = 0; i < n; i++) {
        int k = i2d_X509(certs[i], &bufs[i]);
        if (k <= 0)
            return -1;
        der[i] = (struct th_x509_der){bufs[i], (size_t)k};
    }
    return n;
}

static void chain_free(unsigned char **bufs)
{
    for (size_t i = 0; i < TH_X509_MAX_CHAIN; i++)
        OPENSSL_free(bufs[i]);
}

char *th_tlsfront_cred(SSL *ssl, const uint8_t *secret, const char *client_id, const char *username)
{
    struct th_x509_der der[TH_X509_MAX_CHAIN];
    unsigned char *bufs[TH_X509_MAX_CHAIN] = {0};
    int n = secret ? peer_chain(ssl, der, bufs) : 0;
    char *cred = n > 0 ? malloc(TH_FRONT_MAX_CRED + 1) : NULL;
    size_t clen = 0;
    if (cred && th_front_cred(secret, (const uint8_t *)client_id, strlen(client_id),
                              (const uint8_t *)username, strlen(username), der, (size_t)n, cred,
                              &clen) == TH_OK) {
        cred[clen] = '\0';
    } else {
        free(cred);
        cred = NULL;
    }
    chain_free(bufs);
    return cred;
}

int th_tlsfront_rewrite_connect(SSL *ssl, const uint8_t *secret, const uint8_t *pkt, size_t len,
                                uint8_t **out, size_t *out_len)
{
    struct th_x509_der der[TH_X509_MAX_CHAIN];
    unsigned char *bufs[TH_X509_MAX_CHAIN] = {0};
    int n = secret ? peer_chain(ssl, der, bufs) : 0;
    int rc = n < 0 ? -1 : th_front_rewrite_connect(secret, der, (size_t)n, pkt, len, out, out_len);
    chain_free(bufs);
    return rc;
}
