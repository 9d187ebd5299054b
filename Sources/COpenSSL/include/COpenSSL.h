#ifndef WDSYNC_COPENSSL_H
#define WDSYNC_COPENSSL_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

/* Functions for what OpenSSL exposes only as macros (Swift cannot call macros). */
long wd_SSL_set_tlsext_host_name(SSL *ssl, const char *name);
long wd_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version);
long wd_SSL_CTX_set_mode(SSL_CTX *ctx, long mode);
#endif
