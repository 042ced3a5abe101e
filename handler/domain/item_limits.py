"""What one item of the results table can hold: DynamoDB's item size and number range.

They are storage facts, kept here below storage because a request is checked against them when it is parsed
(handler/domain/requests.py): a request whose item could not hold it and its result is refused before anything
is promised, and a number the table cannot hold is made canonical before the request id is computed.
"""

from __future__ import annotations

#: DynamoDB's item size limit.
MAX_ITEM_BYTES = 400 * 1024
#: Room kept in a stored request's item for its result: the longest output (4,096 tokens at 16 bytes, more
#: than the longest token of common vocabularies), its metrics and model.
RESULT_ROOM_BYTES = 72 * 1024
#: The most a request may take as stored (as JSON; DynamoDB counts the same strings and names, without quotes).
MAX_STORED_REQUEST_BYTES = MAX_ITEM_BYTES - RESULT_ROOM_BYTES

#: DynamoDB stores no number of smaller magnitude than this (it keeps 0 instead).
DYNAMODB_SMALLEST_MAGNITUDE = 1e-128
