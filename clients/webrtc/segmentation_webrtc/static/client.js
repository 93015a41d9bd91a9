// The page's side: camera -> WebRTC -> gateway -> segmentation service -> back.
let connection = null;
const recent = [];

async function start() {
  document.getElementById("start").disabled = true;
  const camera = await navigator.mediaDevices.getUserMedia({
    video: { width: 640, height: 480, frameRate: 15 },
  });
  document.getElementById("local").srcObject = camera;
  connection = new RTCPeerConnection();
  const stats = connection.createDataChannel("stats");
  stats.onmessage = (event) => {
    const figures = JSON.parse(event.data);
    recent.push(figures.round_trip_ms);
    if (recent.length > 30) recent.shift();
    const mean = recent.reduce((a, b) => a + b, 0) / recent.length;
    window.lastFigures = figures;
    window.meanRoundTripMs = mean;
    document.getElementById("latency").textContent =
      `latency: ${mean.toFixed(1)} ms round trip (service ${figures.server_ms.toFixed(1)} ms, ` +
      `batch ${figures.batch_size}), frame ${figures.frame}`;
  };
  connection.ontrack = (event) => {
    document.getElementById("processed").srcObject = event.streams[0] || new MediaStream([event.track]);
  };
  camera.getTracks().forEach((track) => connection.addTrack(track, camera));
  await connection.setLocalDescription(await connection.createOffer());
  // Send the offer once every ICE candidate is in it (the gateway does no trickle ICE).
  await new Promise((resolve) => {
    if (connection.iceGatheringState === "complete") return resolve();
    connection.onicegatheringstatechange = () => {
      if (connection.iceGatheringState === "complete") resolve();
    };
  });
  const response = await fetch("/offer", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      sdp: connection.localDescription.sdp,
      type: connection.localDescription.type,
      effect: document.getElementById("effect").value,
    }),
  });
  await connection.setRemoteDescription(await response.json());
  document.getElementById("stop").disabled = false;
}

function stop() {
  if (connection) connection.close();
  connection = null;
  document.getElementById("start").disabled = false;
  document.getElementById("stop").disabled = true;
}

document.getElementById("start").onclick = start;
document.getElementById("stop").onclick = stop;
