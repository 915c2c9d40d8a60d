// Keyboard shortcuts declared in the markup (no inline handlers: CSP-friendly). Pressing a key
// activates the visible, enabled element whose data-shortcut is that key: a button or link is
// clicked (a form's data-confirm still asks first), a text field is focused. When several
// elements share a key (one "View" per document), each press moves on to the next one. Keys are
// ignored while typing (text fields, text areas, drop-downs), while Ctrl, Alt or Meta is held
// (browser shortcuts keep working) and while a key is held down.
(function () {
  "use strict";
  var last = {};
  var notTyped = ["button", "checkbox", "color", "file", "image", "radio", "range", "reset", "submit"];

  function takesText(element) {
    if (!element || !element.tagName) {
      return false;
    }
    if (element.tagName === "INPUT") {
      return notTyped.indexOf(element.type) < 0;
    }
    return element.tagName === "TEXTAREA" || element.tagName === "SELECT" || element.isContentEditable;
  }

  function usable(element) {
    return !element.disabled && element.getClientRects().length > 0;
  }

  function targets(key) {
    var all = document.querySelectorAll("[data-shortcut]");
    return Array.prototype.filter.call(all, function (element) {
      return element.getAttribute("data-shortcut") === key && usable(element);
    });
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.altKey || event.metaKey || event.repeat || event.isComposing) {
      return;
    }
    if (takesText(event.target)) {
      return;
    }
    var elements = targets(event.key);
    if (elements.length === 0) {
      return;
    }
    event.preventDefault();
    var focused = elements.indexOf(document.activeElement);
    var index = 0;
    if (focused >= 0) {
      index = (focused + 1) % elements.length;
    } else if (last[event.key] !== undefined) {
      index = (last[event.key] + 1) % elements.length;
    }
    last[event.key] = index;
    var element = elements[index];
    element.focus();
    if (!takesText(element)) {
      element.click();
    }
  });
})();
