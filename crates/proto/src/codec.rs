//! The protobuf codec of every govchain service: prost's, except that a
//! message that does not decode is `INVALID_ARGUMENT` (the caller sent bad
//! bytes) rather than tonic's default `INTERNAL` (which would blame us).

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

#[derive(Debug, Clone)]
pub struct StrictCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(self.0.decoder())
    }
}

#[derive(Debug, Clone)]
pub struct StrictDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            use tonic_types::StatusExt as _;
            let mut details = tonic_types::ErrorDetails::new();
            // As govchain-node's errors module names it (ErrorReason
            // INVALID_REQUEST, domain "govchain").
            details.set_error_info(
                "INVALID_REQUEST",
                "govchain",
                std::collections::HashMap::new(),
            );
            Status::with_error_details(
                tonic::Code::InvalidArgument,
                format!("malformed protobuf message: {}", status.message()),
                details,
            )
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
