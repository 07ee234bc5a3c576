"""fastkrb: fast, exact Kerberos service-ticket validation with errors that name the cause."""

from fastkrb.errors import KerberosError

__all__ = ["KerberosError"]
__version__ = "0.1.0"
