"""Registry values checked against the numbers printed in RFC 7296 sec. 3."""

from ikev2.enums import ExchangeType, NotifyType, PayloadType, TransformType, is_error_notify


def test_rfc7296_values() -> None:
    assert ExchangeType.IKE_SA_INIT == 34 and ExchangeType.INFORMATIONAL == 37
    assert PayloadType.SK == 46 and PayloadType.SKF == 53
    assert TransformType.ESN == 5
    assert NotifyType.NAT_DETECTION_SOURCE_IP == 16388
    assert NotifyType.INVALID_KE_PAYLOAD.is_error and not NotifyType.COOKIE.is_error
    assert is_error_notify(9999) and not is_error_notify(40000)
