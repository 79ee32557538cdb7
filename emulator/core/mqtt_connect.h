/*
 * mqtt_connect.h - the MQTT CONNECT packet as bytes: find where the first
 * packet of a connection ends, read a CONNECT (MQTT 3.1, 3.1.1 and 5) into
 * slices of its input, and write one back with some fields replaced.
 *
 * The TLS shim in mosquitto and the gateway's WebSocket bridge
 * (front_rewrite.h) read the first packet a device sends, and when the
 * device authenticated with a client certificate and sent no password,
 * write the CONNECT again with the
 * front's credential (x509.h) as the password (docs/protocol.md, "X.509
 * client certificates"). Anything else in the packet is written back as it
 * was read, so a later change can replace other fields (the client id) the
 * same way.
 *
 * Pure: bytes in, slices and bytes out; nothing allocates.
 */
#ifndef TH_MQTT_CONNECT_H
#define TH_MQTT_CONNECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "th_result.h"

/* Bytes borrowed from someone else's buffer; ptr NULL when absent. */
struct th_bytes {
    const uint8_t *ptr;
    size_t len;
};

/* CONNECT flags (MQTT 3.1.1 section 3.1.2.3). */
enum {
    TH_MQTT_CF_CLEAN = 0x02,
    TH_MQTT_CF_WILL = 0x04,
    TH_MQTT_CF_WILL_QOS = 0x18,
    TH_MQTT_CF_WILL_RETAIN = 0x20,
    TH_MQTT_CF_PASSWORD = 0x40,
    TH_MQTT_CF_USERNAME = 0x80,
};

/* The largest remaining length MQTT can express (four length bytes). */
#define TH_MQTT_MAX_REMAINING 268435455u

/* A CONNECT as read: every member is a slice of the packet it was read from. */
struct th_mqtt_connect {
    struct th_bytes protocol_name; /* "MQTT" or "MQIsdp" */
    uint8_t level;                 /* 3 (3.1), 4 (3.1.1) or 5 */
    uint8_t flags;                 /* TH_MQTT_CF_*; username and password bits follow the fields */
    uint16_t keep_alive;
    struct th_bytes properties; /* level 5: the CONNECT properties, without their length */
    struct th_bytes client_id;
    struct th_bytes will_properties; /* level 5 with a will */
    struct th_bytes will_topic;      /* with TH_MQTT_CF_WILL */
    struct th_bytes will_payload;    /* with TH_MQTT_CF_WILL */
    bool has_username;
    struct th_bytes username;
    bool has_password;
    struct th_bytes password;
};

/*
 * How long the first packet in `buf` is: its fixed header plus remaining
 * length. TH_OK with *packet_len; TH_ERR_BUFFER when `len` bytes do not yet
 * hold the whole length field; TH_ERR_FORMAT when the length field is longer
 * than four bytes. The packet itself may still be incomplete
 * (*packet_len > len).
 */
TH_NODISCARD th_result th_mqtt_packet_length(const uint8_t *buf, size_t len, size_t *packet_len);

/*
 * Read the CONNECT that is exactly `len` bytes of `buf` (th_mqtt_packet_length).
 * TH_OK with `out` filled (slices into `buf`); TH_ERR_FORMAT when it is not a
 * CONNECT, a field runs past the packet, bytes follow the last field, the
 * protocol level is not 3, 4 or 5, the reserved flag is set, or a password
 * comes without a username at level 3 or 4, or a length is not in its shortest form.
 */
TH_NODISCARD th_result th_mqtt_connect_parse(const uint8_t *buf, size_t len,
                                             struct th_mqtt_connect *out);

/*
 * The size th_mqtt_connect_write needs for `c` (the username and password
 * bits of c->flags are taken from has_username and has_password); 0 when a
 * field is over 65535 bytes or the packet over TH_MQTT_MAX_REMAINING.
 */
size_t th_mqtt_connect_size(const struct th_mqtt_connect *c);

/*
 * Write `c` as a CONNECT packet into `out` (`cap` bytes): the fixed header,
 * the variable header and the payload in the order MQTT requires. TH_OK with
 * *out_len; TH_ERR_INVAL when a field is too long (th_mqtt_connect_size 0);
 * TH_ERR_BUFFER when `cap` is too small (nothing useful written). `out` must
 * not overlap the slices of `c`.
 */
TH_NODISCARD th_result th_mqtt_connect_write(const struct th_mqtt_connect *c, uint8_t *out,
                                             size_t cap, size_t *out_len);

#endif
