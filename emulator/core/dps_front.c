/*
 * dps_front.c - the client id of a registering device (dps_front.h).
 */
#include "dps_front.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dps.h"

th_result th_dps_front_client_id(const char *username, size_t len, char *out, size_t cap,
                                 size_t *out_len)
{
    /* th_dps_username_parse reads a C string; a username holding NUL is not a DPS one. */
    char buf[TH_DPS_ID_SCOPE_MAX + TH_MAX_ID_LEN + 64];
    char scope[TH_DPS_ID_SCOPE_MAX + 1], rid[TH_MAX_ID_LEN + 1];
    if (!username || memchr(username, '\0', len))
        return TH_ERR_INVAL;
    /* Only the scope, the id and the start of "/api-version=" matter to the parse. */
    size_t n = len < sizeof buf - 1 ? len : sizeof buf - 1;
    memcpy(buf, username, n);
    buf[n] = '\0';
    if (!th_dps_username_parse(buf, scope, rid))
        return TH_ERR_INVAL;
    int w = snprintf(out, cap, "%s%s", TH_DPS_CLIENT_ID_PREFIX, rid);
    if (w < 0 || (size_t)w >= cap)
        return TH_ERR_BUFFER;
    *out_len = (size_t)w;
    return TH_OK;
}

bool th_dps_client_id_valid(const char *client_id, const char *registration_id)
{
    static const size_t pl = sizeof TH_DPS_CLIENT_ID_PREFIX - 1;
    if (!client_id || !registration_id || !registration_id[0])
        return false;
    if (!strcmp(client_id, registration_id))
        return true;
    return !strncmp(client_id, TH_DPS_CLIENT_ID_PREFIX, pl) &&
           !strcmp(client_id + pl, registration_id);
}

th_result th_dps_https_cred_username(const char *id_scope, const char *registration_id, char *out,
                                     size_t cap)
{
    int w = snprintf(out, cap, "%s/registrations/%s", id_scope ? id_scope : "",
                     registration_id ? registration_id : "");
    return w < 0 || (size_t)w >= cap ? TH_ERR_BUFFER : TH_OK;
}
