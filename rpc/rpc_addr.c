/*
 * rpc_addr.c — the one parser of "HOST:PORT" that every command line of the
 * cluster takes (ptd controller --listen, ptd node --controller, ptctl
 * --controller): a numeric IPv4 address, or an IPv6 one in brackets, a
 * colon, a decimal port. No names are resolved: rpc_tcp.c takes numeric
 * hosts only, and a cluster's addresses do not depend on a resolver.
 * And the one test of a bare host for being such an address.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "rpc/rpc.h"

bool rpc_addr_is_numeric(const char *host)
{
  unsigned char buf[sizeof(struct in6_addr)];

  return host != NULL && (inet_pton(AF_INET, host, buf) == 1 ||
                          inet_pton(AF_INET6, host, buf) == 1);
}

int rpc_addr_parse(const char *s, int min_port, char *host, size_t hostlen,
                   int *port, char *why, size_t whylen)
{
  const char *h, *p;
  unsigned char buf[16];
  size_t hl;
  bool v6;

  if (s[0] == '[') {
    const char *close = strchr(s, ']');
    if (close == NULL || close[1] != ':') {
      snprintf(why, whylen, "expected [IPV6]:PORT, such as [::1]:7000");
      return -EINVAL;
    }
    h = s + 1;
    hl = (size_t)(close - h);
    p = close + 2;
    v6 = true;
  } else {
    const char *colon = strrchr(s, ':');
    if (colon == NULL || strchr(s, ':') != colon) {
      snprintf(why, whylen,
               "expected HOST:PORT with a numeric host, such as "
               "10.0.0.1:7000 (IPv6 in brackets: [::1]:7000)");
      return -EINVAL;
    }
    h = s;
    hl = (size_t)(colon - s);
    p = colon + 1;
    v6 = false;
  }
  if (hl == 0 || hl >= hostlen || hl >= INET6_ADDRSTRLEN) {
    snprintf(why, whylen, "the address is %s",
             hl == 0 ? "missing" : "too long");
    return -EINVAL;
  }
  memcpy(host, h, hl);
  host[hl] = '\0';
  if (inet_pton(v6 ? AF_INET6 : AF_INET, host, buf) != 1) {
    snprintf(why, whylen,
             "the host is not a numeric %s address (no host names)",
             v6 ? "IPv6" : "IPv4");
    return -EINVAL;
  }
  char *end;
  errno = 0;
  long v = strtol(p, &end, 10);
  if (p[0] < '0' || p[0] > '9' || *end != '\0' || errno != 0 ||
      v < min_port || v > 65535) {
    snprintf(why, whylen, "the port must be %d..65535", min_port);
    return -EINVAL;
  }
  *port = (int)v;
  return PT_OK;
}
