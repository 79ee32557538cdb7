/*
 * mqtt_connect.c - reading and writing the MQTT CONNECT packet
 * (mqtt_connect.h): MQTT 3.1.1 section 3.1 and MQTT 5 section 3.1; a
 * variable byte integer is 1 to 4 bytes, 7 bits each, least significant
 * first (3.1.1 section 2.2.3, 5 section 1.5.5).
 */
#include <string.h>

#include "mqtt_connect.h"

#define CONNECT_TYPE 0x10

/*
 * A variable byte integer at p[*pos]; false when it runs past `end`, is over 4 bytes, or is
 * longer than it needs to be ("MUST use the minimum number of bytes", MQTT 5 section 1.5.5):
 * a CONNECT written back must be the bytes that were read.
 */
static bool read_varint(const uint8_t *p, size_t end, size_t *pos, size_t *value)
{
    size_t v = 0;
    for (int i = 0; i < 4; i++) {
        if (*pos >= end)
            return false;
        uint8_t b = p[(*pos)++];
        v |= (size_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *value = v;
            return i == 0 || b != 0;
        }
    }
    return false;
}

static size_t varint_size(size_t v)
{
    return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4;
}

static size_t write_varint(uint8_t *out, size_t v)
{
    size_t n = 0;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        out[n++] = b | (v ? 0x80 : 0);
    } while (v);
    return n;
}

th_result th_mqtt_packet_length(const uint8_t *buf, size_t len, size_t *packet_len)
{
    size_t v = 0;
    for (size_t i = 0; i < 4; i++) {
        if (1 + i >= len)
            return TH_ERR_BUFFER;
        uint8_t b = buf[1 + i];
        v |= (size_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *packet_len = 1 + (i + 1) + v;
            return TH_OK;
        }
    }
    return TH_ERR_FORMAT;
}

/* A two-byte length and that many bytes. */
static bool read_field(const uint8_t *p, size_t end, size_t *pos, struct th_bytes *out)
{
    if (end - *pos < 2)
        return false;
    size_t n = ((size_t)p[*pos] << 8) | p[*pos + 1];
    if (end - *pos - 2 < n)
        return false;
    out->ptr = p + *pos + 2;
    out->len = n;
    *pos += 2 + n;
    return true;
}

/* MQTT 5 properties: a variable byte integer length and that many bytes. */
static bool read_props(const uint8_t *p, size_t end, size_t *pos, struct th_bytes *out)
{
    size_t n;
    if (!read_varint(p, end, pos, &n) || end - *pos < n)
        return false;
    out->ptr = p + *pos;
    out->len = n;
    *pos += n;
    return true;
}

th_result th_mqtt_connect_parse(const uint8_t *buf, size_t len, struct th_mqtt_connect *out)
{
    memset(out, 0, sizeof *out);
    size_t total, pos = 1, rem;
    if (!buf || len < 2 || buf[0] != CONNECT_TYPE ||
        th_mqtt_packet_length(buf, len, &total) != TH_OK || total != len ||
        !read_varint(buf, len, &pos, &rem))
        return TH_ERR_FORMAT;
    if (!read_field(buf, len, &pos, &out->protocol_name) || len - pos < 4)
        return TH_ERR_FORMAT;
    out->level = buf[pos];
    out->flags = buf[pos + 1];
    out->keep_alive = (uint16_t)((buf[pos + 2] << 8) | buf[pos + 3]);
    pos += 4;
    if (out->level < 3 || out->level > 5 || (out->flags & 0x01))
        return TH_ERR_FORMAT;
    if (out->level == 5 && !read_props(buf, len, &pos, &out->properties))
        return TH_ERR_FORMAT;
    if (!read_field(buf, len, &pos, &out->client_id))
        return TH_ERR_FORMAT;
    if (out->flags & TH_MQTT_CF_WILL) {
        if (out->level == 5 && !read_props(buf, len, &pos, &out->will_properties))
            return TH_ERR_FORMAT;
        if (!read_field(buf, len, &pos, &out->will_topic) ||
            !read_field(buf, len, &pos, &out->will_payload))
            return TH_ERR_FORMAT;
    }
    out->has_username = (out->flags & TH_MQTT_CF_USERNAME) != 0;
    out->has_password = (out->flags & TH_MQTT_CF_PASSWORD) != 0;
    if (out->has_password && !out->has_username && out->level < 5)
        return TH_ERR_FORMAT;
    if (out->has_username && !read_field(buf, len, &pos, &out->username))
        return TH_ERR_FORMAT;
    if (out->has_password && !read_field(buf, len, &pos, &out->password))
        return TH_ERR_FORMAT;
    return pos == len ? TH_OK : TH_ERR_FORMAT;
}

/* The remaining length of `c`, or 0 when a field is too long. */
static size_t remaining_size(const struct th_mqtt_connect *c)
{
    const struct th_bytes *fields[] = {&c->protocol_name, &c->client_id, &c->will_topic,
                                       &c->will_payload,  &c->username,  &c->password};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (fields[i]->len > 65535)
            return 0;
    bool will = (c->flags & TH_MQTT_CF_WILL) != 0;
    size_t n = 2 + c->protocol_name.len + 4 + 2 + c->client_id.len;
    if (c->level == 5)
        n += varint_size(c->properties.len) + c->properties.len;
    if (will) {
        n += 2 + c->will_topic.len + 2 + c->will_payload.len;
        if (c->level == 5)
            n += varint_size(c->will_properties.len) + c->will_properties.len;
    }
    if (c->has_username)
        n += 2 + c->username.len;
    if (c->has_password)
        n += 2 + c->password.len;
    return n > TH_MQTT_MAX_REMAINING ? 0 : n;
}

size_t th_mqtt_connect_size(const struct th_mqtt_connect *c)
{
    size_t rem = remaining_size(c);
    return rem ? 1 + varint_size(rem) + rem : 0;
}

static size_t put_field(uint8_t *out, struct th_bytes b)
{
    out[0] = (uint8_t)(b.len >> 8);
    out[1] = (uint8_t)(b.len & 0xff);
    if (b.len)
        memcpy(out + 2, b.ptr, b.len);
    return 2 + b.len;
}

static size_t put_props(uint8_t *out, struct th_bytes b)
{
    size_t n = write_varint(out, b.len);
    if (b.len)
        memcpy(out + n, b.ptr, b.len);
    return n + b.len;
}

th_result th_mqtt_connect_write(const struct th_mqtt_connect *c, uint8_t *out, size_t cap,
                                size_t *out_len)
{
    size_t rem = remaining_size(c);
    if (!rem)
        return TH_ERR_INVAL;
    size_t total = 1 + varint_size(rem) + rem;
    if (total > cap)
        return TH_ERR_BUFFER;
    uint8_t flags = c->flags & (uint8_t) ~(TH_MQTT_CF_USERNAME | TH_MQTT_CF_PASSWORD);
    if (c->has_username)
        flags |= TH_MQTT_CF_USERNAME;
    if (c->has_password)
        flags |= TH_MQTT_CF_PASSWORD;
    size_t pos = 0;
    out[pos++] = CONNECT_TYPE;
    pos += write_varint(out + pos, rem);
    pos += put_field(out + pos, c->protocol_name);
    out[pos++] = c->level;
    out[pos++] = flags;
    out[pos++] = (uint8_t)(c->keep_alive >> 8);
    out[pos++] = (uint8_t)(c->keep_alive & 0xff);
    if (c->level == 5)
        pos += put_props(out + pos, c->properties);
    pos += put_field(out + pos, c->client_id);
    if (flags & TH_MQTT_CF_WILL) {
        if (c->level == 5)
            pos += put_props(out + pos, c->will_properties);
        pos += put_field(out + pos, c->will_topic);
        pos += put_field(out + pos, c->will_payload);
    }
    if (c->has_username)
        pos += put_field(out + pos, c->username);
    if (c->has_password)
        pos += put_field(out + pos, c->password);
    *out_len = pos;
    return TH_OK;
}
