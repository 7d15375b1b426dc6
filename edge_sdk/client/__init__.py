"""Device side of the cloud link: the wire format and an HTTP client with retries."""

from edge_sdk.client.http import API_KEY_HEADER, CloudClient, Prediction
from edge_sdk.client.payloads import PayloadFormatError, decode_tensors, encode_tensors

__all__ = ["API_KEY_HEADER", "CloudClient", "PayloadFormatError", "Prediction", "decode_tensors", "encode_tensors"]
