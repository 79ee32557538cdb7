/*
 * scn_options.c - what `twinhub run` changes in a loaded scenario from its
 * command line (docs/scenarios.md, "Running"): --time-scale F multiplies
 * every time bound (an agent that runs in real time, or a fast test double
 * of one), --var NAME=VALUE gives a scenario variable another value.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

bool th_scn_parse_time_scale(const char *text, double *out)
{
    if (!text || !*text || strchr(" \t\n+-", text[0]) || strpbrk(text, "xXnNiI"))
        return false; /* a plain decimal: no sign, hex, nan or inf */
    char *end = NULL;
    double f = strtod(text, &end);
    if (!end || *end != '\0' || !isfinite(f) || f < TH_SCN_TIME_SCALE_MIN ||
        f > TH_SCN_TIME_SCALE_MAX)
        return false;
    *out = f;
    return true;
}

bool th_scn_parse_var_arg(const char *arg, char *name, size_t size, const char **value)
{
    const char *eq = arg ? strchr(arg, '=') : NULL;
    if (!eq || (size_t)(eq - arg) >= size)
        return false;
    memcpy(name, arg, (size_t)(eq - arg));
    name[eq - arg] = '\0';
    if (!th_vars_valid_name(name))
        return false;
    *value = eq + 1;
    return true;
}

/* us * f, rounded, kept within int64_t. */
static int64_t scale_us(int64_t us, double f)
{
    double v = (double)us * f + 0.5;
    if (v >= 9.2e18)
        return INT64_MAX / 2;
    return v < 1 ? 0 : (int64_t)v;
}

void th_scenario_scale_time(struct th_scenario *s, double f)
{
    if (!s || f == 1.0)
        return;
    s->default_within_us = scale_us(s->default_within_us, f);
    for (size_t i = 0; i < s->nsteps; i++)
        s->steps[i].bound_us = scale_us(s->steps[i].bound_us, f);
}

th_result th_scenario_set_variable(struct th_scenario *s, const char *name, const char *value)
{
    cJSON *vars = cJSON_GetObjectItemCaseSensitive(s->doc, "variables");
    if (!cJSON_IsObject(vars) || !cJSON_GetObjectItemCaseSensitive(vars, name))
        return TH_ERR_NOT_FOUND;
    /* The value is taken as given: "${" becomes the literal "$${". */
    size_t n = 0;
    for (const char *p = value; (p = strstr(p, "${")); p += 2)
        n++;
    char *lit = malloc(strlen(value) + n + 1);
    if (!lit)
        return TH_ERR_NOMEM;
    char *o = lit;
    for (const char *p = value; *p; p++) {
        if (p[0] == '$' && p[1] == '{')
            *o++ = '$';
        *o++ = *p;
    }
    *o = '\0';
    cJSON *item = cJSON_CreateString(lit);
    free(lit);
    if (!item || !cJSON_ReplaceItemInObjectCaseSensitive(vars, name, item)) {
        cJSON_Delete(item);
        return TH_ERR_NOMEM;
    }
    s->variables = vars;
    return TH_OK;
}
