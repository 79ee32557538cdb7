/*
 * gw_dash_assets.h - the dashboard's files, built into the binary: the
 * table is generated at build time from emulator/gateway/dashboard/ by
 * dashboard/embed.py (a meson custom_target), so the page needs nothing
 * from outside the hub but Debian's Chart.js (gw_dash.c).
 */
#ifndef TH_GW_DASH_ASSETS_H
#define TH_GW_DASH_ASSETS_H

#include <stddef.h>

struct gw_dash_asset {
    const char *path; /* "/index.html", "/app.js", ...: under /dashboard, or the page at / */
    const char *type; /* Content-Type */
    const unsigned char *data;
    size_t len;
};

/* The asset at `path`, or NULL. */
const struct gw_dash_asset *gw_dash_asset_find(const char *path);

#endif
