/*
 * scn_vars.c - ${name} substitution in scenario strings (docs/scenarios.md,
 * "Variables"): scenario variables, captures and the runner's variables
 * (hub.*, device.<id>.*, module.<id>.<mid>.*). "$${" is a literal "${".
 */
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

#define NAME_MAX_LEN 600

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && !strcmp(s + n - m, suffix);
}

bool th_vars_is_run_var(const char *name)
{
    if (!strcmp(name, "hub.name") || !strcmp(name, "hub.caFile") || !strcmp(name, "hub.mqttPort") ||
        !strcmp(name, "hub.mqttsPort") || !strcmp(name, "hub.idScope"))
        return true;
    if (!strncmp(name, "device.", 7))
        return (has_suffix(name + 7, ".connectionString") &&
                strlen(name + 7) > strlen(".connectionString")) ||
               (has_suffix(name + 7, ".primaryKey") && strlen(name + 7) > strlen(".primaryKey"));
    if (!strncmp(name, "module.", 7)) {
        const char *rest = name + 7;
        /* <device>.<module>.connectionString: at least one '.' before the suffix */
        if (!has_suffix(rest, ".connectionString"))
            return false;
        size_t body = strlen(rest) - strlen(".connectionString");
        const char *dot = memchr(rest, '.', body);
        return dot && dot > rest && (size_t)(dot - rest) < body - 1;
    }
    return false;
}

bool th_vars_valid_name(const char *name)
{
    if (!name || !name[0] || strlen(name) > 128)
        return false;
    if (!((name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z') ||
          name[0] == '_'))
        return false;
    for (const char *p = name + 1; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            return false;
    return true;
}

bool th_vars_scan(const char *s, void (*cb)(const char *name, void *arg), void *arg, size_t *bad)
{
    char name[NAME_MAX_LEN + 1];
    for (size_t i = 0; s[i]; i++) {
        if (s[i] != '$')
            continue;
        if (s[i + 1] == '$' && s[i + 2] == '{') {
            i += 2; /* "$${": literal */
            continue;
        }
        if (s[i + 1] != '{')
            continue;
        const char *close = strchr(s + i + 2, '}');
        size_t len = close ? (size_t)(close - (s + i + 2)) : 0;
        if (!close || len == 0 || len > NAME_MAX_LEN) {
            if (bad)
                *bad = i;
            return false;
        }
        memcpy(name, s + i + 2, len);
        name[len] = '\0';
        if (cb)
            cb(name, arg);
        i += 2 + len;
    }
    return true;
}

char *th_vars_subst_string(const char *s, const cJSON *vars, char *unknown, size_t size)
{
    size_t cap = strlen(s) + 64, len = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    for (size_t i = 0; s[i];) {
        const char *piece = s + i;
        size_t plen = 1, adv = 1;
        char name[NAME_MAX_LEN + 1];
        if (s[i] == '$' && s[i + 1] == '$' && s[i + 2] == '{') {
            piece = "${";
            plen = 2;
            adv = 3;
        } else if (s[i] == '$' && s[i + 1] == '{') {
            const char *close = strchr(s + i + 2, '}');
            size_t nlen = close ? (size_t)(close - (s + i + 2)) : 0;
            if (!close || nlen == 0 || nlen > NAME_MAX_LEN) {
                /* validation refuses these; keep the text as it is */
            } else {
                memcpy(name, s + i + 2, nlen);
                name[nlen] = '\0';
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(vars, name);
                if (!cJSON_IsString(v)) {
                    if (unknown)
                        snprintf(unknown, size, "%s", name);
                    free(out);
                    return NULL;
                }
                piece = v->valuestring;
                plen = strlen(piece);
                adv = nlen + 3;
            }
        }
        if (len + plen + 1 > cap) {
            size_t ncap = (len + plen + 1) * 2;
            char *t = realloc(out, ncap);
            if (!t) {
                free(out);
                if (unknown && size)
                    unknown[0] = '\0';
                return NULL;
            }
            out = t;
            cap = ncap;
        }
        memcpy(out + len, piece, plen);
        len += plen;
        i += adv;
    }
    out[len] = '\0';
    return out;
}

cJSON *th_vars_subst(const cJSON *in, const cJSON *vars, char *unknown, size_t size)
{
    if (unknown && size)
        unknown[0] = '\0';
    if (cJSON_IsString(in)) {
        if (!strchr(in->valuestring, '$'))
            return cJSON_CreateString(in->valuestring);
        char *t = th_vars_subst_string(in->valuestring, vars, unknown, size);
        if (!t)
            return NULL;
        cJSON *out = cJSON_CreateString(t);
        free(t);
        return out;
    }
    if (cJSON_IsObject(in) || cJSON_IsArray(in)) {
        cJSON *out = cJSON_IsObject(in) ? cJSON_CreateObject() : cJSON_CreateArray();
        if (!out)
            return NULL;
        const cJSON *c;
        cJSON_ArrayForEach(c, in)
        {
            cJSON *v = th_vars_subst(c, vars, unknown, size);
            if (!v) {
                cJSON_Delete(out);
                return NULL;
            }
            bool added = cJSON_IsObject(in) ? cJSON_AddItemToObject(out, c->string, v)
                                            : cJSON_AddItemToArray(out, v);
            if (!added) {
                cJSON_Delete(v);
                cJSON_Delete(out);
                return NULL;
            }
        }
        return out;
    }
    return cJSON_Duplicate(in, 0);
}
