/*
 * x509_certs.c - writes the certificates the X.509 conformance suite
 * (x509.test.mjs) connects with, made by tests/unit/x509_fixture.h:
 *   x509-certs DIR CN
 * DIR/self.{pem,key}     self-signed, valid (registered by thumbprint)
 * DIR/expired.{pem,key}  self-signed, expired yesterday
 * DIR/ca.{pem,key}       a root CA
 * DIR/leaf.{pem,key}     CN=CN, signed by the root CA
 * DIR/wrongcn.{pem,key}  CN=CN-other, signed by the root CA
 * DIR/foreign.{pem,key}  CN=CN, signed by another root CA
 * and prints {"self":{"sha1","sha256"},"expired":{...}} on stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "x509_fixture.h"

#define DAY 86400L

static void put(const char *dir, const char *name, const struct fx_cert *c)
{
    char path[4096];
    char *pem = fx_pem(c, false), *key = fx_key_pem(c);
    snprintf(path, sizeof path, "%s/%s.pem", dir, name);
    if (!fx_write(path, pem))
        exit(1);
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    if (!fx_write(path, key))
        exit(1);
    free(pem);
    free(key);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: x509-certs DIR CN\n");
        return 2;
    }
    const char *dir = argv[1], *cn = argv[2];
    char other[512];
    snprintf(other, sizeof other, "%s-other", cn);
    struct fx_cert self = fx_make("x509-conformance-self", NULL, false, -60, DAY);
    struct fx_cert expired = fx_make("x509-conformance-self", NULL, false, -2 * DAY, -DAY);
    struct fx_cert ca = fx_make("x509-conformance-root", NULL, true, -60, 30 * DAY);
    struct fx_cert leaf = fx_make(cn, &ca, false, -60, DAY);
    struct fx_cert wrong = fx_make(other, &ca, false, -60, DAY);
    struct fx_cert fca = fx_make("x509-conformance-foreign-root", NULL, true, -60, DAY);
    struct fx_cert foreign = fx_make(cn, &fca, false, -60, DAY);
    put(dir, "self", &self);
    put(dir, "expired", &expired);
    put(dir, "ca", &ca);
    put(dir, "leaf", &leaf);
    put(dir, "wrongcn", &wrong);
    put(dir, "foreign", &foreign);
    char s1[41], s256[65], e1[41], e256[65];
    fx_thumb(&self, false, s1);
    fx_thumb(&self, true, s256);
    fx_thumb(&expired, false, e1);
    fx_thumb(&expired, true, e256);
    printf("{\"self\":{\"sha1\":\"%s\",\"sha256\":\"%s\"},\"expired\":{\"sha1\":\"%s\","
           "\"sha256\":\"%s\"}}\n",
           s1, s256, e1, e256);
    struct fx_cert *all[] = {&self, &expired, &ca, &leaf, &wrong, &fca, &foreign};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        fx_free(all[i]);
    return 0;
}
