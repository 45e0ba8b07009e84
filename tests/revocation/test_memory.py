"""chit.revocation: the revocation list under the SDK, and its in-memory implementation."""

from chit.revocation import RevocationCheck, RevokedTokens
from chit.sdk import RevocationCheck as SdkRevocationCheck
from chit.sdk import RevokedTokens as SdkRevokedTokens


def test_the_sdk_names_are_the_revocation_layer_s() -> None:
    assert SdkRevocationCheck is RevocationCheck
    assert SdkRevokedTokens is RevokedTokens
    revoked = RevokedTokens()
    revoked.revoke_token("jti-1")
    revoked.revoke_session("rtf_1")
    assert isinstance(revoked, RevocationCheck)
    assert revoked.is_revoked("jti-1", None)
    assert revoked.is_revoked("jti-2", "rtf_1")
    assert not revoked.is_revoked("jti-2", "rtf_2")
    assert not revoked.is_revoked("jti-2", None)
