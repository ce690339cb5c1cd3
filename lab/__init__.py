"""The local lab of tiny real guests (see README.md): image, guest agent, domain XML, console."""
