# cython: language_level=3
"""fastkrb's native core: one compilation unit (asyncpg style) that includes one file per stage.

Data flows one way: framing -> DER -> key lookup -> ticket -> authenticator -> policy -> replay -> result.
The C in native/*.c does the work without the GIL; these .pxi files only cross the Python boundary.
"""

include "crypto.pxi"
include "validator.pxi"
include "replay.pxi"
