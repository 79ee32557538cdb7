/*
 * front_rewrite.c - the first packet's rewrite (front_rewrite.h), moved here
 * from the relay front that served the MQTT/TLS port before the TLS shim
 * (gateway/gw_tlsfront.c, removed), unchanged in behaviour.
 */
#include "front_rewrite.h"

#include <stdbool.h>
#include <stdlib.h>

#include "dps_front.h"
#include "mqtt_connect.h"
#include "th_limits.h"

th_result th_front_cred(const uint8_t *secret, const uint8_t *cid, size_t cid_len,
                        const uint8_t *user, size_t user_len, const struct th_x509_der *chain,
                        size_t n, char *cred, size_t *clen)
{
    if (!secret || n == 0)
        return TH_ERR_INVAL;
    if (n > TH_X509_MAX_CHAIN)
        n = TH_X509_MAX_CHAIN;
    th_result r = th_x509_cred_build(secret, TH_X509_SECRET_LEN, cid, cid_len, user, user_len,
                                     chain, n, cred, TH_FRONT_MAX_CRED, clen);
    if (r == TH_ERR_BUFFER && n > 1)
        r = th_x509_cred_build(secret, TH_X509_SECRET_LEN, cid, cid_len, user, user_len, chain, 1,
                               cred, TH_FRONT_MAX_CRED, clen);
    return r;
}

int th_front_rewrite_connect(const uint8_t *secret, const struct th_x509_der *chain, size_t n,
                             const uint8_t *pkt, size_t len, uint8_t **out, size_t *out_len)
{
    struct th_mqtt_connect c;
    char dps_cid[sizeof TH_DPS_CLIENT_ID_PREFIX + TH_MAX_ID_LEN];
    size_t dps_cid_len = 0;
    if (th_mqtt_connect_parse(pkt, len, &c) != TH_OK || !c.has_username)
        return 0;
    /* A registering device gets a client id no hub device can hold (dps_front.h). */
    bool dps = th_dps_front_client_id((const char *)c.username.ptr, c.username.len, dps_cid,
                                      sizeof dps_cid, &dps_cid_len) == TH_OK;
    if (dps) {
        c.client_id.ptr = (const uint8_t *)dps_cid;
        c.client_id.len = dps_cid_len;
    }
    bool cert = secret && n > 0 && !c.has_password;
    if (!dps && !cert)
        return 0;
    char *cred = NULL;
    if (cert) {
        size_t clen = 0;
        cred = malloc(TH_FRONT_MAX_CRED);
        if (!cred)
            return -1;
        /* The HMAC covers the client id as the broker will see it. Without a credential that
         * fits, the CONNECT passes on without one (the hub refuses it for having no password);
         * a DPS client still gets its client id rewritten. */
        th_result r = th_front_cred(secret, c.client_id.ptr, c.client_id.len, c.username.ptr,
                                    c.username.len, chain, n, cred, &clen);
        if (r == TH_OK) {
            c.has_password = true;
            c.password.ptr = (const uint8_t *)cred;
            c.password.len = clen;
        } else if (r != TH_ERR_BUFFER || !dps) {
            free(cred);
            return r == TH_ERR_BUFFER ? 0 : -1;
        }
    }
    int rc;
    size_t size = th_mqtt_connect_size(&c);
    uint8_t *pk = size ? malloc(size) : NULL;
    if (pk && th_mqtt_connect_write(&c, pk, size, out_len) == TH_OK) {
        *out = pk;
        rc = 1;
    } else {
        free(pk);
        rc = size ? -1 : 0;
    }
    free(cred);
    return rc;
}
