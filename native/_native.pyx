# cython: language_level=3, auto_pickle=False, autotestdict=False
"""fastkrb's native core: one compilation unit (asyncpg style) that includes one file per job.

Data flows one way: framing -> DER -> key lookup -> ticket -> authenticator -> policy -> replay -> result.
The C in native/*.c does the work without the GIL; the .pxi files only cross the Python boundary. Each
C header is declared once, in the .pxd of the same name (der, kcrypto, pac, rcache, shm, validate), which the
.pxi files cimport; verdict and stage names come from validate.h's lists, never from a copy here.
"""

include "crypto.pxi"      # fastkrb.krb.crypto's entry points and CryptoKey
include "identity.pxi"    # Identity and SidSet: the client's SIDs from a verified PAC (pac.c)
include "result.pxi"      # AuthResult, and the facts of a rejection
include "replay.pxi"      # the native replay-cache base class and its fail-closed errors
include "memory.pxi"      # MemoryReplayCache (rcache.c)
include "shm.pxi"         # ShmReplayCache (shm.c)
include "validator.pxi"   # NativeValidator and the verdict table
include "inspect.pxi"     # decode_token, for fastkrb.tools.inspect_token
include "profile.pxi"     # profile_stages and rcache_bench: stage costs timed in C
include "sesscache.pxi"    # NativeSessions: opened session cookies answered in C (sesscache.c)
include "front.pxi"       # NativeFront: the sidecar's request path for both front doors (front.c)
include "front_batch.pxi" # both front doors with a Redis replay cache: one round trip per chunk
