// toolkit ui: follows a run's log through server-sent events. Text goes in as text nodes, never as HTML.
(function () {
  "use strict";
  function follow(pre) {
    var url = pre.getAttribute("data-follow");
    var box = document.getElementById("log-follow");
    var source = new EventSource(url);
    function atEnd() { return !box || box.checked; }
    if (atEnd()) { pre.scrollTop = pre.scrollHeight; }
    source.onmessage = function (event) {
      pre.appendChild(document.createTextNode(JSON.parse(event.data)));
      if (atEnd()) { pre.scrollTop = pre.scrollHeight; }
      pre.setAttribute("data-received", String(Number(pre.getAttribute("data-received") || "0") + 1));
    };
    source.addEventListener("end", function () {
      source.close();
      pre.setAttribute("data-ended", "true");
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var pre = document.getElementById("log");
    if (pre && pre.getAttribute("data-follow")) { follow(pre); }
  });
})();
