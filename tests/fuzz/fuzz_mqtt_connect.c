/*
 * fuzz_mqtt_connect.c - libFuzzer target for the MQTT CONNECT codec
 * (core/mqtt_connect.h), which the TLS front runs on the first bytes any
 * client sends: th_mqtt_packet_length on the input, th_mqtt_connect_parse on
 * the packet it delimits; a CONNECT that parses is written back (unchanged it
 * must be the same bytes), and with a password added it must parse again with
 * every other field as it was. The TLS shim's rewrite (core/front_rewrite.h)
 * runs on the packet with a certificate: what it writes must parse, with a
 * password. Then the X.509 credential is opened on the input as a password
 * (core/x509.h), which must never crash or accept.
 */
#include "front_rewrite.h"
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
    if (th_mqtt_packet_length(in, size, &plen) == TH_OK && plen <= size) {
        static const uint8_t der[] = {0x30, 0x03, 0x02, 0x01, 0x01}; /* not parsed here */
        static const uint8_t key[TH_X509_SECRET_LEN] = {2};
        const struct th_x509_der chain[1] = {{der, sizeof der}};
        uint8_t *rw = NULL;
        size_t rwlen = 0;
        int r = th_front_rewrite_connect(key, chain, 1, in, plen, &rw, &rwlen);
        FUZZ_CHECK(r == 0 || r == 1);
        if (r == 1) {
            FUZZ_CHECK(th_mqtt_connect_parse(rw, rwlen, &back) == TH_OK && back.has_password);
            free(rw);
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
