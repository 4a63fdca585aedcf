//! A fake vLLM frontend built from `zeromq` sockets the way vLLM's frontends
//! build theirs (a ROUTER for the handshake, a ROUTER for requests, a PULL
//! for outputs), and script helpers, shared by the engine-core and tap tests.

// Each test crate uses its own share of these.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use mock_engine::script::{FinishReason, Script, Step};
use mock_engine::wire::{
    EngineCoreOutputs, EngineCoreRequest, HandshakeStatus, InitMessage, ReadyResponse, RequestType,
    SamplingParams, StatusKind, VllmVersion,
};
use rmpv::Value;
use zeromq::{PullSocket, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

/// Generous: only a broken engine takes this long.
pub const WAIT: Duration = Duration::from_secs(20);

pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A frontend's sockets, bound, before any engine connected.
pub struct Bound {
    /// Where an engine (or a tap) connects.
    pub handshake_address: String,
    handshake: RouterSocket,
    input: RouterSocket,
    input_address: String,
    output: PullSocket,
    output_address: String,
}

impl Bound {
    pub async fn bind() -> Self {
        let mut handshake = RouterSocket::new();
        let handshake_address = handshake.bind("tcp://127.0.0.1:0").await.unwrap();
        let mut input = RouterSocket::new();
        let input_address = input.bind("tcp://127.0.0.1:0").await.unwrap();
        let mut output = PullSocket::new();
        let output_address = output.bind("tcp://127.0.0.1:0").await.unwrap();
        Self {
            handshake_address: handshake_address.to_string(),
            handshake,
            input,
            input_address: input_address.to_string(),
            output,
            output_address: output_address.to_string(),
        }
    }

    /// Completes the handshake with the engine that connects, checking every
    /// start-up message on the way (rank 0, a mock engine's ready response).
    pub async fn accept(self) -> Frontend {
        let Self {
            mut handshake,
            mut input,
            output,
            ..
        } = self;
        let hello = within("HELLO", handshake.recv()).await.unwrap().into_vec();
        assert_eq!(&hello[0][..], &[0, 0], "identity is rank 0 as two LE bytes");
        assert_eq!(
            HandshakeStatus::decode(&hello[1]).unwrap(),
            HandshakeStatus {
                status: StatusKind::Hello,
                local: false,
                headless: true
            }
        );
        let init = InitMessage {
            inputs: vec![self.input_address.clone()],
            outputs: vec![self.output_address.clone()],
            coordinator_input: None,
            coordinator_output: None,
            frontend_stats_publish_address: None,
            parallel_config: Value::Map(vec![(Value::from("marker"), Value::from(7))]),
        };
        let reply: ZmqMessage = vec![hello[0].clone(), Bytes::from(init.encode())]
            .try_into()
            .unwrap();
        handshake.send(reply).await.unwrap();

        let ready = within("ready response", input.recv())
            .await
            .unwrap()
            .into_vec();
        let identity = ready[0].clone();
        assert_eq!(&identity[..], &[0, 0]);
        let response = ReadyResponse::decode(&ready[1]).unwrap();
        assert_eq!(response.max_model_len, 2048);
        assert_eq!(response.vllm_version, "0.32.0");

        let ready = within("READY", handshake.recv()).await.unwrap().into_vec();
        assert_eq!(
            HandshakeStatus::decode(&ready[1]).unwrap().status,
            StatusKind::Ready
        );
        Frontend {
            input,
            output,
            identity,
            _handshake: handshake,
        }
    }
}

/// A frontend past READY.
pub struct Frontend {
    pub input: RouterSocket,
    pub output: PullSocket,
    pub identity: Bytes,
    _handshake: RouterSocket,
}

impl Frontend {
    pub async fn send(&mut self, kind: RequestType, payload: Vec<u8>) {
        self.send_frames(vec![Bytes::from(vec![kind.byte()]), Bytes::from(payload)])
            .await;
    }

    /// Any frames, behind the engine's identity.
    pub async fn send_frames(&mut self, frames: Vec<Bytes>) {
        let mut all = vec![self.identity.clone()];
        all.extend(frames);
        let message: ZmqMessage = all.try_into().unwrap();
        self.input.send(message).await.unwrap();
    }

    pub async fn add(&mut self, id: &str, prompt: Vec<u32>, sampling: &[(&str, Value)]) {
        let mut request = EngineCoreRequest::new(id, prompt);
        request.sampling_params = Some(SamplingParams::from_pairs(sampling).unwrap());
        let layout = VllmVersion::V0_32_0.layout();
        self.send(RequestType::Add, request.encode(layout)).await;
    }

    pub async fn next_raw(&mut self) -> Vec<Bytes> {
        within("an output", self.output.recv())
            .await
            .unwrap()
            .into_vec()
    }

    pub async fn next(&mut self) -> EngineCoreOutputs {
        let frames = self.next_raw().await;
        EngineCoreOutputs::decode(VllmVersion::V0_32_0.layout(), &frames[0], &frames[1..]).unwrap()
    }
}

pub fn step(tokens: &[u32]) -> Step {
    Step {
        tokens: tokens.to_vec(),
        delay_ms: 5,
        ..Step::default()
    }
}

pub fn finish(tokens: &[u32], reason: FinishReason) -> Step {
    Step {
        finish: Some(reason),
        ..step(tokens)
    }
}

pub fn script(steps: Vec<Step>) -> Script {
    Script {
        steps,
        ..Script::default()
    }
}
