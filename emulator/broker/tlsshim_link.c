/*
 * tlsshim_link.c - the plugin's side of the TLS shim (tlsshim/tlsshim.h,
 * docs/protocol.md "X.509 client certificates"). With plugin_opt_tls_shim
 * required, mosquitto's MQTT/TLS listener asks for a required client
 * certificate unless the shim is preloaded; without it every SAS device
 * would be refused at the TLS layer, so the plugin refuses to start instead.
 * The shim's functions are looked up in the process (dlsym RTLD_DEFAULT:
 * the preloaded library is in the global scope) so that the plugin needs no
 * link to it and loads without it on a broker without a TLS port.
 */
#define _GNU_SOURCE
#include <dlfcn.h>

#include "plugin.h"
#include "tlsshim.h"

int brk_tlsshim_link(struct brk_plugin *p)
{
    th_tlsshim_arm_fn arm = (th_tlsshim_arm_fn)dlsym(RTLD_DEFAULT, TH_TLSSHIM_ARM_SYMBOL);
    th_tlsshim_sweep_fn sweep = (th_tlsshim_sweep_fn)dlsym(RTLD_DEFAULT, TH_TLSSHIM_SWEEP_SYMBOL);
    if (!arm || !sweep) {
        mosquitto_log_printf(MOSQ_LOG_ERR,
                             "twinhub: plugin_opt_tls_shim required, but the TLS shim "
                             "(twinhub_tlsshim.so) is not preloaded into mosquitto "
                             "(LD_PRELOAD); the MQTT/TLS listener would refuse clients without "
                             "a certificate");
        return MOSQ_ERR_INVAL;
    }
    if (!p->has_front_secret) {
        mosquitto_log_printf(MOSQ_LOG_ERR,
                             "twinhub: plugin_opt_tls_shim required needs plugin_opt_front_secret");
        return MOSQ_ERR_INVAL;
    }
    int v = arm(p->front_secret, sizeof p->front_secret);
    if (v != TH_TLSSHIM_VERSION) {
        mosquitto_log_printf(MOSQ_LOG_ERR,
                             "twinhub: the preloaded TLS shim is version %d, this plugin needs %d; "
                             "use the shim built with it",
                             v, TH_TLSSHIM_VERSION);
        return MOSQ_ERR_INVAL;
    }
    p->tlsshim_sweep = sweep;
    return MOSQ_ERR_SUCCESS;
}

void brk_tlsshim_sweep(struct brk_plugin *p)
{
    if (!p->tlsshim_sweep)
        return;
    int n = p->tlsshim_sweep();
    if (n > 0 && p->verbose)
        mosquitto_log_printf(MOSQ_LOG_NOTICE,
                             "twinhub: closed %d TLS connection(s) without a CONNECT within %d s",
                             n, TH_TLSSHIM_FIRST_PACKET_TIMEOUT_S);
}
