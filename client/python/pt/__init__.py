"""pt: snapshots of a training rank's state in CPU memory, held by pt's SMPs.

Low level (this module): ``Client`` over libpt (pt.h). Errors raise
``pt.Error`` whose ``code``, ``name`` and ``text`` are libpt's; a skipped
snapshot is the return value ``pt.SKIPPED``, not an exception, and so is
``pt.RECOVER`` (a client opened with ``recover_in_place=True`` that ptd asks
to restore in place); ``restore()`` returns None when there is nothing to
restore (a fresh start).
"""
from ._pt import (Client, Error as _Error, OK, SKIPPED, RECOVER, ENOSNAP, VERSION,
                  strerror)

__all__ = ["Client", "Error", "OK", "SKIPPED", "RECOVER", "ENOSNAP", "VERSION",
           "strerror"]


def _code(self):
    return self.args[0]


def _name(self):
    return self.args[1]


def _text(self):
    return self.args[2]


_Error.code = property(_code)
_Error.name = property(_name)
_Error.text = property(_text)
_Error.__str__ = lambda self: "%s: %s" % (self.args[1], self.args[2])
Error = _Error
Error.__doc__ = ("A libpt failure: code (negative: a negated errno or a PT_E* code), "
                 "name (e.g. 'PT_ECHECKSUM') and text.")
