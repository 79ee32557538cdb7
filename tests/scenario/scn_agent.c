/*
 * scn_agent.c - a tiny device agent for the scenario runner's tests: it
 * connects over TLS with TWINHUB_CONNECTION_STRING and TWINHUB_CA_FILE (as
 * `twinhub run` provides them), GETs its twin, reports, echoes desired
 * patches, answers the method "reboot", reports the last C2D body, sends
 * telemetry, and reconnects with a fresh token whenever it is dropped.
 *
 * AGENT_MODE changes the behaviour so that tests can see failures:
 *   good   (default) as above
 *   wrong  acknowledges desired numbers off by one; telemetry type "status"
 *   exit   exits with code 3 after its first report
 *   silent connects and GETs the twin, never reports or sends telemetry
 * AGENT_TELEMETRY_MS (default 200, 0 = none), AGENT_FIRMWARE (default 1.2.3).
 *
 * Where it dials: GatewayHostName (host[:port]) when the connection string
 * has one, else HostName on 8883. AGENT_DIAL=hostname dials HostName:8883
 * whatever else is given, as the Azure IoT C SDKs do (their MQTT port is a
 * constant): the agent of the "ports" case.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <mosquitto.h>

#include "sas.h"

static struct {
    char hub[256], device[129], module[129], key[128], host[256];
    int port;
    const char *ca, *mode, *firmware;
    long telemetry_ms;
    struct mosquitto *mosq;
    bool connected, want_reconnect;
    int reconnects;
    unsigned rid;
    long long next_telemetry, retry_get_at, retry_report_at;
    char *pending_report; /* a report to retry after an error */
    long readings;
    bool exit_after_loop;
    volatile sig_atomic_t stop;
} A;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_term(int sig)
{
    (void)sig;
    A.stop = 1;
}

static bool field(const char *cs, const char *name, char *out, size_t size)
{
    size_t n = strlen(name);
    for (const char *p = cs; p && *p;) {
        if (!strncmp(p, name, n) && p[n] == '=') {
            snprintf(out, size, "%.*s", (int)strcspn(p + n + 1, ";"), p + n + 1);
            return true;
        }
        p = strchr(p, ';');
        if (p)
            p++;
    }
    return false;
}

static void publish(const char *topic, const char *payload, int qos)
{
    mosquitto_publish(A.mosq, NULL, topic, (int)strlen(payload), payload, qos, false);
}

static void get_twin(void)
{
    char topic[64];
    snprintf(topic, sizeof topic, "$iothub/twin/GET/?$rid=g%u", ++A.rid);
    publish(topic, "", 0);
}

static void report(const char *json)
{
    char topic[80];
    free(A.pending_report);
    A.pending_report = strdup(json);
    snprintf(topic, sizeof topic, "$iothub/twin/PATCH/properties/reported/?$rid=r%u", ++A.rid);
    publish(topic, json, 0);
    printf("agent: reported %s\n", json);
    fflush(stdout);
}

/* What the agent acknowledges for a desired document or patch. */
static void acknowledge(cJSON *desired, bool startup)
{
    cJSON *rep = cJSON_CreateObject();
    if (startup) {
        cJSON_AddStringToObject(rep, "firmware", A.firmware);
        cJSON_AddNumberToObject(rep, "startups", A.reconnects + 1);
    }
    cJSON *c;
    cJSON_ArrayForEach(c, desired)
    {
        if (c->string[0] == '$')
            continue;
        cJSON *v = cJSON_Duplicate(c, 1);
        if (!strcmp(A.mode, "wrong") && cJSON_IsNumber(v))
            cJSON_SetNumberValue(v, v->valuedouble + 1);
        cJSON_AddItemToObject(rep, c->string, v);
    }
    char *text = cJSON_PrintUnformatted(rep);
    cJSON_Delete(rep);
    if (strcmp(A.mode, "silent") != 0)
        report(text);
    free(text);
    if (!strcmp(A.mode, "exit"))
        A.exit_after_loop = true;
}

static int status_of(const char *topic)
{
    /* $iothub/twin/res/{status}/?$rid=... */
    return atoi(topic + strlen("$iothub/twin/res/"));
}

static void on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    (void)m;
    (void)obj;
    const char *t = msg->topic;
    char *body = strndup(msg->payload ? msg->payload : "", (size_t)msg->payloadlen);
    if (!strncmp(t, "$iothub/twin/res/", 17)) {
        int status = status_of(t);
        bool get = strstr(t, "$rid=g") != NULL;
        printf("agent: twin %s answered %d\n", get ? "GET" : "report", status);
        fflush(stdout);
        if (get && status == 200) {
            cJSON *doc = cJSON_Parse(body);
            acknowledge(cJSON_GetObjectItemCaseSensitive(doc, "desired"), true);
            cJSON_Delete(doc);
        } else if (get) {
            A.retry_get_at = now_ms() + 150;
        } else if (status >= 300) {
            A.retry_report_at = now_ms() + 150;
        } else {
            free(A.pending_report);
            A.pending_report = NULL;
        }
    } else if (!strncmp(t, "$iothub/twin/PATCH/properties/desired/", 38)) {
        cJSON *doc = cJSON_Parse(body);
        acknowledge(doc, false);
        cJSON_Delete(doc);
    } else if (!strncmp(t, "$iothub/methods/POST/", 21)) {
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)strcspn(t + 21, "/"), t + 21);
        const char *rid = strstr(t, "$rid=");
        char topic[160];
        bool known = !strcmp(name, "reboot");
        snprintf(topic, sizeof topic, "$iothub/methods/res/%d/?$rid=%s", known ? 200 : 404,
                 rid ? rid + 5 : "0");
        publish(topic, known ? "{\"rebooted\":true}" : "{\"error\":\"unknown method\"}", 0);
    } else if (strstr(t, "/messages/devicebound/")) {
        cJSON *rep = cJSON_CreateObject();
        cJSON_AddStringToObject(rep, "lastC2D", body);
        char *text = cJSON_PrintUnformatted(rep);
        if (strcmp(A.mode, "silent") != 0)
            report(text);
        free(text);
        cJSON_Delete(rep);
    }
    free(body);
}

static void on_connect(struct mosquitto *m, void *obj, int rc)
{
    (void)obj;
    printf("agent: CONNACK %d\n", rc);
    fflush(stdout);
    if (rc != 0) {
        A.want_reconnect = true;
        return;
    }
    A.connected = true;
    char sub[300];
    mosquitto_subscribe(m, NULL, "$iothub/twin/res/#", 0);
    mosquitto_subscribe(m, NULL, "$iothub/twin/PATCH/properties/desired/#", 0);
    mosquitto_subscribe(m, NULL, "$iothub/methods/POST/#", 0);
    if (!A.module[0]) {
        snprintf(sub, sizeof sub, "devices/%s/messages/devicebound/#", A.device);
        mosquitto_subscribe(m, NULL, sub, 1);
    }
    get_twin();
}

static void on_disconnect(struct mosquitto *m, void *obj, int rc)
{
    (void)m;
    (void)obj;
    printf("agent: disconnected (%d)\n", rc);
    fflush(stdout);
    A.connected = false;
    A.want_reconnect = true;
}

/* A fresh token on every connection: a revoked one (expireToken) is never reused. */
static bool set_credentials(void)
{
    char sr[600], user[700], token[1024];
    if (A.module[0])
        snprintf(sr, sizeof sr, "%s/devices/%s/modules/%s", A.hub, A.device, A.module);
    else
        snprintf(sr, sizeof sr, "%s/devices/%s", A.hub, A.device);
    if (th_sas_sign(sr, A.key, (int64_t)time(NULL) + 3600 + A.reconnects, NULL, token,
                    sizeof token) != TH_OK)
        return false;
    snprintf(user, sizeof user, "%s/%s%s%s/?api-version=2021-04-12", A.hub, A.device,
             A.module[0] ? "/" : "", A.module);
    return mosquitto_username_pw_set(A.mosq, user, token) == MOSQ_ERR_SUCCESS;
}

int main(void)
{
    const char *cs = getenv("TWINHUB_CONNECTION_STRING");
    char gw[300] = "";
    A.ca = getenv("TWINHUB_CA_FILE");
    A.mode = getenv("AGENT_MODE") ? getenv("AGENT_MODE") : "good";
    A.firmware = getenv("AGENT_FIRMWARE") ? getenv("AGENT_FIRMWARE") : "1.2.3";
    A.telemetry_ms = getenv("AGENT_TELEMETRY_MS") ? atol(getenv("AGENT_TELEMETRY_MS")) : 200;
    if (!cs || !A.ca || !field(cs, "HostName", A.hub, sizeof A.hub) ||
        !field(cs, "DeviceId", A.device, sizeof A.device) ||
        !field(cs, "SharedAccessKey", A.key, sizeof A.key)) {
        fprintf(stderr, "agent: needs TWINHUB_CONNECTION_STRING and TWINHUB_CA_FILE\n");
        return 2;
    }
    field(cs, "ModuleId", A.module, sizeof A.module);
    /* As the SDKs: dial GatewayHostName, else HostName (on 8883). */
    const char *dial = getenv("AGENT_DIAL");
    if ((dial && !strcmp(dial, "hostname")) || !field(cs, "GatewayHostName", gw, sizeof gw))
        snprintf(gw, sizeof gw, "%s", A.hub);
    char *colon = strrchr(gw, ':');
    A.port = colon ? atoi(colon + 1) : 8883;
    snprintf(A.host, sizeof A.host, "%.*s", colon ? (int)(colon - gw) : (int)strlen(gw), gw);
    printf("agent: dialling %s port %d\n", A.host, A.port);
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    setvbuf(stdout, NULL, _IOLBF, 0);

    mosquitto_lib_init();
    char id[300];
    snprintf(id, sizeof id, "%s%s%s", A.device, A.module[0] ? "/" : "", A.module);
    A.mosq = mosquitto_new(id, true, NULL);
    mosquitto_int_option(A.mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_int_option(A.mosq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_tls_set(A.mosq, A.ca, NULL, NULL, NULL, NULL);
    mosquitto_tls_insecure_set(A.mosq, false);
    mosquitto_connect_callback_set(A.mosq, on_connect);
    mosquitto_disconnect_callback_set(A.mosq, on_disconnect);
    mosquitto_message_callback_set(A.mosq, on_message);
    if (!set_credentials()) {
        fprintf(stderr, "agent: bad key\n");
        return 2;
    }
    int rc = mosquitto_connect(A.mosq, A.host, A.port, 30);
    if (rc != MOSQ_ERR_SUCCESS)
        A.want_reconnect = true;
    long long reconnect_at = now_ms() + 100;
    A.next_telemetry = now_ms() + A.telemetry_ms;
    while (!A.stop) {
        if (mosquitto_loop(A.mosq, 20, 1) != MOSQ_ERR_SUCCESS) {
            struct timespec ts = {0, 10 * 1000 * 1000}; /* not connected: do not spin */
            nanosleep(&ts, NULL);
        }
        long long now = now_ms();
        if (A.exit_after_loop) {
            mosquitto_loop(A.mosq, 50, 1); /* let the report leave */
            printf("agent: exiting with code 3 (AGENT_MODE=exit)\n");
            return 3;
        }
        if (A.want_reconnect && now >= reconnect_at) {
            A.want_reconnect = false;
            A.reconnects++;
            set_credentials();
            if (mosquitto_reconnect(A.mosq) != MOSQ_ERR_SUCCESS)
                A.want_reconnect = true;
            reconnect_at = now + 100;
        } else if (!A.want_reconnect) {
            reconnect_at = now + 100;
        }
        if (A.connected && A.retry_get_at && now >= A.retry_get_at) {
            A.retry_get_at = 0;
            get_twin();
        }
        if (A.connected && A.retry_report_at && now >= A.retry_report_at && A.pending_report) {
            A.retry_report_at = 0;
            char *again = strdup(A.pending_report);
            report(again);
            free(again);
        }
        if (A.connected && A.telemetry_ms > 0 && now >= A.next_telemetry &&
            strcmp(A.mode, "silent") != 0) {
            A.next_telemetry = now + A.telemetry_ms;
            char topic[400], body[128];
            const char *type = !strcmp(A.mode, "wrong") ? "status" : "reading";
            if (A.module[0])
                snprintf(topic, sizeof topic, "devices/%s/modules/%s/messages/events/type=%s",
                         A.device, A.module, type);
            else
                snprintf(topic, sizeof topic, "devices/%s/messages/events/type=%s", A.device, type);
            snprintf(body, sizeof body, "{\"type\":\"%s\",\"value\":%ld}", type, ++A.readings);
            publish(topic, body, 1);
        }
    }
    mosquitto_disconnect(A.mosq);
    mosquitto_loop(A.mosq, 50, 1);
    mosquitto_destroy(A.mosq);
    mosquitto_lib_cleanup();
    return 0;
}
