/*
 * th_net.h - the one free-port helper of twinhub's processes and tests: a TCP
 * port on 127.0.0.1 that the kernel just handed out (bind to port 0, read the
 * port, close). Used by `twinhub run` (its fallback ports) and the test
 * harnesses. The port is free when returned, not reserved: callers that start
 * a server on it retry when it is taken in between.
 */
#ifndef TH_NET_H
#define TH_NET_H

/* A free TCP port on 127.0.0.1, or -1 with errno set. */
int th_free_loopback_port(void);

#endif
