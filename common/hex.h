/*
 * hex.h — the value of one hexadecimal digit, for the decoders of the
 * project's text formats (%XX escapes in node.state and in a coding
 * group's member arguments, an instance id in hex). Header only: libpt's
 * snapshot/ uses it as well as the daemons.
 */
#ifndef PT_HEX_H
#define PT_HEX_H

/* 0..15 for '0'-'9', 'a'-'f', 'A'-'F'; -1 for any other byte. */
static inline int hex_value(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

#endif /* PT_HEX_H */
