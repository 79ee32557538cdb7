/*
 * iolayer.h - the broker I/O layer, part of the shim preloaded into mosquitto
 * (twinhub_tlsshim.so; iolayer.c says what it does and why, docs/architecture.md
 * "The broker's I/O layer"). What it offers the plugin, looked up with
 * dlsym(RTLD_DEFAULT, ...) so that the plugin loads with or without it.
 */
#ifndef TH_IOLAYER_H
#define TH_IOLAYER_H

#include <stdbool.h>
#include <stdint.h>

/* Counters since the broker started (the broker's main thread keeps them). */
struct th_iolayer_stats {
    bool active;                /* false: TWINHUB_BROKER_IO=plain, or the layer could not start */
    uint64_t reads;             /* mosquitto's reads of its sockets */
    uint64_t kernel_reads;      /* ... of which went to the kernel */
    uint64_t epoll_ctl_calls;   /* mosquitto's epoll_ctl calls on its set */
    uint64_t epoll_ctl_applied; /* epoll_ctl calls made to the kernel for them */
    uint64_t waits;             /* epoll_waits of the broker's loop */
    uint64_t ready_from_kept;   /* readable events given for bytes the layer kept */
    uint64_t writes;            /* mosquitto's writes to its sockets */
    uint64_t kernel_writes;     /* write(2) calls the layer made for them */
};

/* "th_iolayer_get_stats": copy the counters to *out; 0, or -1 when out is NULL. */
typedef int (*th_iolayer_get_stats_fn)(struct th_iolayer_stats *out);
#define TH_IOLAYER_GET_STATS_SYMBOL "th_iolayer_get_stats"

#endif
