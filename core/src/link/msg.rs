//! Constructors for native messages: each sets `type` to match the oneof member, as the
//! RedPepper peers dispatch on `type`.

use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;
use switchboard_proto::{Message, MessageType};

/// The `MessageType` that goes with a oneof member.
pub fn type_of(body: &Body) -> MessageType {
    match body {
        Body::ClientHello(_) => MessageType::Clienthello,
        Body::ServerHello(_) => MessageType::Serverhello,
        Body::Bye(_) => MessageType::Bye,
        Body::Ping(_) => MessageType::Ping,
        Body::Pong(_) => MessageType::Pong,
        Body::Command(_) => MessageType::Command,
        Body::Cancel(_) => MessageType::Commandcancel,
        Body::Progress(_) => MessageType::Commandprogress,
        Body::Result(_) => MessageType::Commandresult,
        Body::Done(_) => MessageType::Commanddone,
        Body::Request(_) => MessageType::Request,
        Body::Response(_) => MessageType::Response,
        Body::SessionHello(_) => MessageType::Sessionhello,
        Body::SessionWelcome(_) => MessageType::Sessionwelcome,
        Body::ControlError(_) => MessageType::Controlerror,
        Body::ListAgentsRequest(_) => MessageType::Listagentsrequest,
        Body::ListAgentsResponse(_) => MessageType::Listagentsresponse,
        Body::RegisterAgentRequest(_) => MessageType::Registeragentrequest,
        Body::RegisterAgentResponse(_) => MessageType::Registeragentresponse,
        Body::RunCommandRequest(_) => MessageType::Runcommandrequest,
        Body::RunCommandResponse(_) => MessageType::Runcommandresponse,
        Body::SetAgentDataRequest(_) => MessageType::Setagentdatarequest,
        Body::SetAgentDataResponse(_) => MessageType::Setagentdataresponse,
        Body::RemoveAgentRequest(_) => MessageType::Removeagentrequest,
        Body::RemoveAgentResponse(_) => MessageType::Removeagentresponse,
        Body::RegisterUserRequest(_) => MessageType::Registeruserrequest,
        Body::RegisterUserResponse(_) => MessageType::Registeruserresponse,
        Body::RemoveUserRequest(_) => MessageType::Removeuserrequest,
        Body::RemoveUserResponse(_) => MessageType::Removeuserresponse,
        Body::ListUsersRequest(_) => MessageType::Listusersrequest,
        Body::ListUsersResponse(_) => MessageType::Listusersresponse,
        Body::CreateChannelRequest(_) => MessageType::Createchannelrequest,
        Body::CreateChannelResponse(_) => MessageType::Createchannelresponse,
        Body::DeleteChannelRequest(_) => MessageType::Deletechannelrequest,
        Body::DeleteChannelResponse(_) => MessageType::Deletechannelresponse,
        Body::JoinChannelRequest(_) => MessageType::Joinchannelrequest,
        Body::JoinChannelResponse(_) => MessageType::Joinchannelresponse,
        Body::LeaveChannelRequest(_) => MessageType::Leavechannelrequest,
        Body::LeaveChannelResponse(_) => MessageType::Leavechannelresponse,
        Body::ListChannelsRequest(_) => MessageType::Listchannelsrequest,
        Body::ListChannelsResponse(_) => MessageType::Listchannelsresponse,
        Body::LoginRequest(_) => MessageType::Loginrequest,
        Body::LoginResponse(_) => MessageType::Loginresponse,
        Body::RenewSessionRequest(_) => MessageType::Renewsessionrequest,
        Body::RenewSessionResponse(_) => MessageType::Renewsessionresponse,
        Body::LogoutRequest(_) => MessageType::Logoutrequest,
        Body::LogoutResponse(_) => MessageType::Logoutresponse,
        Body::SetUserCredentialsRequest(_) => MessageType::Setusercredentialsrequest,
        Body::SetUserCredentialsResponse(_) => MessageType::Setusercredentialsresponse,
        Body::SubscribeEventsRequest(_) => MessageType::Subscribeeventsrequest,
        Body::SubscribeEventsResponse(_) => MessageType::Subscribeeventsresponse,
        Body::EventNotice(_) => MessageType::Eventnotice,
        Body::RenewCertificateRequest(_) => MessageType::Renewcertificaterequest,
        Body::RenewCertificateResponse(_) => MessageType::Renewcertificateresponse,
        Body::RevokeCertificateRequest(_) => MessageType::Revokecertificaterequest,
        Body::RevokeCertificateResponse(_) => MessageType::Revokecertificateresponse,
        Body::ListCertificatesRequest(_) => MessageType::Listcertificatesrequest,
        Body::ListCertificatesResponse(_) => MessageType::Listcertificatesresponse,
        Body::FeedLookupRequest(_) => MessageType::Feedlookuprequest,
        Body::FeedLookupResponse(_) => MessageType::Feedlookupresponse,
        Body::FeedLoginRequest(_) => MessageType::Feedloginrequest,
        Body::FeedLoginResponse(_) => MessageType::Feedloginresponse,
        Body::FeedInboxRequest(_) => MessageType::Feedinboxrequest,
        Body::FeedClientAddRequest(_) => MessageType::Feedclientaddrequest,
        Body::FeedClientAddResponse(_) => MessageType::Feedclientaddresponse,
        Body::FeedClientRemoveRequest(_) => MessageType::Feedclientremoverequest,
        Body::FeedClientRemoveResponse(_) => MessageType::Feedclientremoveresponse,
        Body::StreamOpen(_) => MessageType::Streamopen,
        Body::StreamAccept(_) => MessageType::Streamaccept,
        Body::StreamReject(_) => MessageType::Streamreject,
        Body::StreamData(_) => MessageType::Streamdata,
        Body::StreamCredit(_) => MessageType::Streamcredit,
        Body::StreamResync(_) => MessageType::Streamresync,
        Body::StreamClose(_) => MessageType::Streamclose,
        Body::ListStreamsRequest(_) => MessageType::Liststreamsrequest,
        Body::ListStreamsResponse(_) => MessageType::Liststreamsresponse,
        Body::FeedClientListRequest(_) => MessageType::Feedclientlistrequest,
        Body::FeedClientListResponse(_) => MessageType::Feedclientlistresponse,
    }
}

/// The request id a response (or a ControlError) answers, if it is one (0 for a ControlError
/// about a message without an id).
pub fn response_id(m: &Body) -> Option<u64> {
    Some(match m {
        Body::ControlError(e) => e.request_id,
        Body::LoginResponse(r) => r.request_id,
        Body::RenewSessionResponse(r) => r.request_id,
        Body::LogoutResponse(r) => r.request_id,
        Body::ListAgentsResponse(r) => r.request_id,
        Body::RegisterAgentResponse(r) => r.request_id,
        Body::RemoveAgentResponse(r) => r.request_id,
        Body::RunCommandResponse(r) => r.request_id,
        Body::SetAgentDataResponse(r) => r.request_id,
        Body::RegisterUserResponse(r) => r.request_id,
        Body::RemoveUserResponse(r) => r.request_id,
        Body::ListUsersResponse(r) => r.request_id,
        Body::CreateChannelResponse(r) => r.request_id,
        Body::DeleteChannelResponse(r) => r.request_id,
        Body::JoinChannelResponse(r) => r.request_id,
        Body::LeaveChannelResponse(r) => r.request_id,
        Body::ListChannelsResponse(r) => r.request_id,
        Body::SetUserCredentialsResponse(r) => r.request_id,
        Body::RevokeCertificateResponse(r) => r.request_id,
        Body::ListCertificatesResponse(r) => r.request_id,
        Body::SubscribeEventsResponse(r) => r.request_id,
        Body::FeedLookupResponse(r) => r.request_id,
        Body::FeedLoginResponse(r) => r.request_id,
        Body::FeedClientAddResponse(r) => r.request_id,
        Body::FeedClientRemoveResponse(r) => r.request_id,
        Body::FeedClientListResponse(r) => r.request_id,
        Body::StreamAccept(r) => r.request_id,
        Body::StreamReject(r) => r.request_id,
        Body::ListStreamsResponse(r) => r.request_id,
        _ => return None,
    })
}

/// The request id of a session request (as the hub answers it in `response_id`), if the
/// message is one.
pub fn request_id_mut(body: &mut Body) -> Option<&mut u64> {
    Some(match body {
        Body::LoginRequest(r) => &mut r.request_id,
        Body::RenewSessionRequest(r) => &mut r.request_id,
        Body::LogoutRequest(r) => &mut r.request_id,
        Body::ListAgentsRequest(r) => &mut r.request_id,
        Body::RegisterAgentRequest(r) => &mut r.request_id,
        Body::RemoveAgentRequest(r) => &mut r.request_id,
        Body::RunCommandRequest(r) => &mut r.request_id,
        Body::SetAgentDataRequest(r) => &mut r.request_id,
        Body::RegisterUserRequest(r) => &mut r.request_id,
        Body::RemoveUserRequest(r) => &mut r.request_id,
        Body::ListUsersRequest(r) => &mut r.request_id,
        Body::SetUserCredentialsRequest(r) => &mut r.request_id,
        Body::CreateChannelRequest(r) => &mut r.request_id,
        Body::DeleteChannelRequest(r) => &mut r.request_id,
        Body::JoinChannelRequest(r) => &mut r.request_id,
        Body::LeaveChannelRequest(r) => &mut r.request_id,
        Body::ListChannelsRequest(r) => &mut r.request_id,
        Body::RevokeCertificateRequest(r) => &mut r.request_id,
        Body::ListCertificatesRequest(r) => &mut r.request_id,
        Body::SubscribeEventsRequest(r) => &mut r.request_id,
        Body::FeedLookupRequest(r) => &mut r.request_id,
        Body::FeedLoginRequest(r) => &mut r.request_id,
        Body::FeedInboxRequest(r) => &mut r.request_id,
        Body::FeedClientAddRequest(r) => &mut r.request_id,
        Body::FeedClientRemoveRequest(r) => &mut r.request_id,
        Body::FeedClientListRequest(r) => &mut r.request_id,
        Body::StreamOpen(r) => &mut r.request_id,
        Body::ListStreamsRequest(r) => &mut r.request_id,
        _ => return None,
    })
}

/// Wraps a body in a `Message` with the matching `type`.
pub fn wrap(body: Body) -> Message {
    Message {
        r#type: type_of(&body) as i32,
        message: Some(body),
    }
}

/// The body of a received message, if its `type` agrees with the member that is set.
///
/// RedPepper dispatches on `type` alone; a message whose `type` and oneof disagree (or that has
/// no member) is malformed.
pub fn body(m: Message) -> Result<Body, String> {
    let ty = m.r#type;
    match m.message {
        Some(b) if type_of(&b) as i32 == ty => Ok(b),
        Some(b) => Err(format!(
            "type {ty} does not match its payload {:?}",
            type_of(&b)
        )),
        None => Err(format!("message of type {ty} has no payload")),
    }
}

/// ClientHello.
pub fn client_hello(id: &str, auth: &str) -> Message {
    wrap(Body::ClientHello(pb::ClientHello {
        client_id: id.into(),
        auth: auth.into(),
        features: Vec::new(),
    }))
}
/// ServerHello{version: 1}: the only version a 0.0.x agent accepts.
pub fn server_hello() -> Message {
    wrap(Body::ServerHello(pb::ServerHello { version: 1 }))
}
/// Bye.
pub fn bye(reason: &str) -> Message {
    wrap(Body::Bye(pb::Bye {
        reason: reason.into(),
    }))
}
/// Ping.
pub fn ping(data: i32) -> Message {
    wrap(Body::Ping(pb::Ping { data }))
}
/// Pong.
pub fn pong(data: i32) -> Message {
    wrap(Body::Pong(pb::Pong { data }))
}
/// Command.
pub fn command(id: i64, ty: &str, data: &str) -> Message {
    wrap(Body::Command(pb::Command {
        command_id: id,
        r#type: ty.into(),
        data: data.into(),
    }))
}
/// CommandCancel.
pub fn cancel(id: i64) -> Message {
    wrap(Body::Cancel(pb::CommandCancel { command_id: id }))
}
/// CommandProgress.
pub fn progress(id: i64, current: u32, total: u32, message: &str) -> Message {
    wrap(Body::Progress(pb::CommandProgress {
        command_id: id,
        current,
        total,
        message: message.into(),
    }))
}
/// CommandResult.
pub fn result(id: i64, status: pb::command_result::Status, changed: bool, output: &str) -> Message {
    wrap(Body::Result(pb::CommandResult {
        command_id: id,
        status: status as i32,
        changed,
        output: output.into(),
    }))
}
/// CommandDone.
pub fn done(id: i64, status: pb::command_result::Status, changed: bool, output: &str) -> Message {
    wrap(Body::Done(pb::CommandDone {
        command_id: id,
        status: status as i32,
        changed,
        output: output.into(),
    }))
}
/// Request (agent -> manager).
pub fn request(id: i64, name: &str, data: &str) -> Message {
    wrap(Body::Request(pb::Request {
        request_id: id,
        name: name.into(),
        data: data.into(),
    }))
}
/// Response (manager -> agent).
pub fn response(id: i64, success: bool, data: &str) -> Message {
    wrap(Body::Response(pb::Response {
        request_id: id,
        success,
        data: data.into(),
    }))
}

/// Truncates `s` to at most `max` bytes on a char boundary, marking the cut.
pub fn truncate_output(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    const MARK: &str = "\n[output truncated]";
    let mut cut = max.saturating_sub(MARK.len());
    while cut > 0 && !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{MARK}", &s[..cut]).into()
}
