/*
 * mail_field.c - header field syntax shared by `relayq send` and intake:
 * where a field name ends, matching names, and the mbox "From " line
 * that both leave out of a message.
 *
 * Public: mail_field_name_len(), mail_mbox_from_is() (and the inline
 * mail_field_is() of mail.h).
 */
#include <string.h>

#include "mail.h"

/* The length of the field name LINE starts with; see mail.h. */
size_t
mail_field_name_len(const char *line, size_t len)
{
	size_t i = 0;

	while (i < len && (unsigned char)line[i] > ' ' &&
	    (unsigned char)line[i] < 0x7f && line[i] != ':')
		i++;
	return i;
}

/* Tells an mbox separator from a "From :" field; see mail.h. */
bool
mail_mbox_from_is(const char *line, size_t len)
{
	size_t i = 4;

	if (len < 5 || memcmp(line, "From ", 5) != 0)
		return false;
	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	return i >= len || line[i] != ':';
}
