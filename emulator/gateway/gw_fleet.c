/*
 * gw_fleet.c - the fleet-management part of the service REST API
 * (docs/rest-api.md): the bulk registry operation (POST /devices) and
 * automatic device and module configurations (/configurations/{id},
 * /configurations, /configurations/testQueries), each translated into one
 * control API command (bulkRegistry, createConfiguration, ...; docs/control-api.md)
 * and its answer into the hub's HTTP response. Routes are in gw_rest.c's table.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_private.h"
#include "json.h"

/* {"command": name} plus `key`: `value` (taken; NULL: none); NULL on out-of-memory. */
static cJSON *command_with(const char *name, const char *key, cJSON *value)
{
    cJSON *cmd = cJSON_CreateObject();
    if (!cmd || !cJSON_AddStringToObject(cmd, "command", name) ||
        (value && !cJSON_AddItemToObject(cmd, key, value))) {
        cJSON_Delete(cmd);
        cJSON_Delete(value);
        return NULL;
    }
    return cmd;
}

/* ---- bulk registry ----------------------------------------------------------------------- */

/* 200 when every entry was carried out, else 400; both with the BulkRegistryOperationResult. */
static void done_bulk(struct th_gateway *gw, struct gw_conn *c, const cJSON *entry)
{
    (void)gw;
    if (!gw_rest_answer_ok(c, entry))
        return;
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(entry, "data");
    gw_rest_respond_json(c, th_json_bool(data, "isSuccessful", false) ? 200 : 400, data, NULL);
    gw_http_resume(c);
}

void gw_fleet_bulk(struct gw_conn *c)
{
    cJSON *body = gw_rest_body(c, true);
    if (!body)
        return;
    gw_rest_call(c, command_with("bulkRegistry", "devices", body), GW_CALL_TIMEOUT_S, done_bulk);
}

/* ---- configurations ---------------------------------------------------------------------- */

/* {"command", "id": the path's id}[, "etag": If-Match]; NULL on out-of-memory. */
static cJSON *config_command(struct gw_conn *c, const char *name, bool with_etag)
{
    char buf[256];
    const char *etag = with_etag ? gw_rest_if_match(c, buf, sizeof buf) : NULL;
    cJSON *cmd = command_with(name, NULL, NULL);
    if (cmd && (!cJSON_AddStringToObject(cmd, "id", c->ids[0]) ||
                (etag && !cJSON_AddStringToObject(cmd, "etag", etag)))) {
        cJSON_Delete(cmd);
        return NULL;
    }
    return cmd;
}

/* PUT /configurations/{id}: create, or with If-Match update (the SDKs' updateConfiguration). */
void gw_fleet_put_config(struct gw_conn *c)
{
    cJSON *body = gw_rest_body(c, false);
    if (!body)
        return;
    const char *bid = th_json_string(body, "id", NULL);
    if (bid && strcmp(bid, c->ids[0])) {
        gw_rest_error(c, 400, TH_EC_ARGUMENT_INVALID,
                      "the id in the body ('%s') does not match the one in the path ('%s')", bid,
                      c->ids[0]);
        cJSON_Delete(body);
        return;
    }
    char buf[256];
    bool update = gw_rest_if_match(c, buf, sizeof buf) != NULL;
    cJSON *cmd = config_command(c, update ? "updateConfiguration" : "createConfiguration", true);
    if (cmd && !cJSON_AddItemToObject(cmd, "configuration", body)) {
        cJSON_Delete(cmd);
        cmd = NULL;
    } else if (cmd) {
        body = NULL;
    }
    cJSON_Delete(body);
    gw_rest_call(c, cmd, GW_CALL_TIMEOUT_S, gw_rest_done_entity);
}

void gw_fleet_get_config(struct gw_conn *c)
{
    gw_rest_call(c, config_command(c, "getConfiguration", false), GW_CALL_TIMEOUT_S,
                 gw_rest_done_entity);
}

void gw_fleet_delete_config(struct gw_conn *c)
{
    gw_rest_call(c, config_command(c, "deleteConfiguration", true), GW_CALL_TIMEOUT_S,
                 gw_rest_done_no_content);
}

void gw_fleet_list_configs(struct gw_conn *c)
{
    char top[32];
    cJSON *cmd = command_with("listConfigurations", NULL, NULL);
    if (cmd && gw_req_query(&c->req, "top", top, sizeof top)) {
        char *end;
        long v = strtol(top, &end, 10);
        if (!top[0] || *end || v < 1) {
            cJSON_Delete(cmd);
            gw_rest_error(c, 400, TH_EC_ARGUMENT_INVALID, "top must be a whole number from 1");
            return;
        }
        if (!cJSON_AddNumberToObject(cmd, "top", (double)(v > 1000 ? 1000 : v))) {
            cJSON_Delete(cmd);
            cmd = NULL;
        }
    }
    gw_rest_call(c, cmd, GW_CALL_TIMEOUT_S, gw_rest_done_data);
}

/* POST /configurations/testQueries {"targetCondition", "customMetricQueries"}. */
void gw_fleet_test_queries(struct gw_conn *c)
{
    cJSON *body = gw_rest_body(c, false);
    if (!body)
        return;
    gw_rest_call(c, command_with("testConfigurationQueries", "input", body), GW_CALL_TIMEOUT_S,
                 gw_rest_done_data);
}
