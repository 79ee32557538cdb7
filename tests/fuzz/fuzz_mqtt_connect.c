/*
 * fuzz_mqtt_connect.c - libFuzzer target for the MQTT CONNECT codec
 * (core/mqtt_connect.h), which the TLS front runs on the first bytes any
 * client sends: th_mqtt_packet_length on the input, th_mqtt_connect_parse on
 * the packet it delimits; a CONNECT that parses is written back (unchanged it
 * must be the same bytes), and with a password added it must parse again with
 * every other field as it was. Then the X.509 credential is opened on the
 * input as a password (core/x509.h), which must never crash or accept.
 */
#include "fuzz_common.h"
#include "mqtt_connect.h"
#include "x509.h"

static int same(struct th_bytes a, struct th_bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *in = (uint8_t *)fuzz_bytes(data, size);
    size_t plen = 0;
    struct th_mqtt_connect c, back;
    if (th_mqtt_packet_length(in, size, &plen) == TH_OK && plen <= size &&
        th_mqtt_connect_parse(in, plen, &c) == TH_OK) {
        size_t need = th_mqtt_connect_size(&c), n = 0;
        FUZZ_CHECK(need == plen);
        uint8_t *out = malloc(need);
        FUZZ_CHECK(out && th_mqtt_connect_write(&c, out, need, &n) == TH_OK && n == plen);
        FUZZ_CHECK(memcmp(out, in, plen) == 0);
        free(out);
        if (c.has_username && !c.has_password) {
            static const uint8_t pw[] = "credential";
            struct th_mqtt_connect w = c;
            w.has_password = true;
            w.password.ptr = pw;
            w.password.len = sizeof pw - 1;
            need = th_mqtt_connect_size(&w);
            out = malloc(need ? need : 1);
            FUZZ_CHECK(out && need && th_mqtt_connect_write(&w, out, need, &n) == TH_OK);
            FUZZ_CHECK(th_mqtt_connect_parse(out, n, &back) == TH_OK);
            FUZZ_CHECK(back.has_password && same(back.password, w.password));
            FUZZ_CHECK(same(back.client_id, c.client_id) && same(back.username, c.username) &&
                       same(back.will_topic, c.will_topic) &&
                       same(back.will_payload, c.will_payload) &&
                       same(back.properties, c.properties) && back.keep_alive == c.keep_alive);
            free(out);
        }
    }
    char *pw = fuzz_cstr(data, size);
    struct th_x509_chain *ch = NULL;
    static const uint8_t secret[TH_X509_SECRET_LEN] = {1};
    char reason[TH_X509_REASON_BUF];
    FUZZ_CHECK(th_x509_cred_open(secret, sizeof secret, "d", "u", pw, &ch, reason, sizeof reason) !=
               TH_OK);
    free(pw);
    free(in);
    return 0;
}
