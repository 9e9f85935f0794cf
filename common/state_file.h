/*
 * state_file.h — small files that must survive a crash whole: node.state
 * today, the controller's journal next. A writer never leaves a torn file
 * and never writes through a link another user planted; a reader takes only
 * a regular file of this user that nobody else may write.
 */
#ifndef PT_STATE_FILE_H
#define PT_STATE_FILE_H

#include <stddef.h>

/* Replaces path with the len bytes at data, atomically: they go to
 * "<path>.tmp" (made new with O_EXCL | O_NOFOLLOW, mode 0600; whatever was
 * there is unlinked first, never opened), which is fsync'ed and renamed over
 * path, and then the directory is fsync'ed, so a reader sees the old file or
 * the new one, before and after a crash. 0 or a negated errno
 * (-ENAMETOOLONG for a path that does not fit). */
int state_file_write(const char *path, const void *data, size_t len);

/* Reads path whole into *data (malloc'd, NUL-terminated after *len bytes;
 * the caller frees it). Not through a symbolic link (PT_EFORMAT, "it is a
 * symbolic link"), only a regular file owned by this euid and not writable
 * by group or others, of at most max bytes (PT_EFORMAT with a sentence in
 * err). A missing file is -ENOENT; other failures a negated errno. */
int state_file_read(const char *path, size_t max, char **data, size_t *len,
                    char *err, size_t errlen);

#endif /* PT_STATE_FILE_H */
