// Train LoRA tab glue: the webui progress bar for a running job (re-attached after a page load), periodic panel
// refresh, "Send to txt2img", and refreshing the Lora cards once a file is written.
// Works with both front ends: A1111 1.10 (gradio 3.41) and Forge (gradio 4.40) share these webui helpers
// (gradioApp, requestProgress, onUiTabChange, switch_to_txt2img, updateInput) and the Lora refresh button ids;
// functions called through js= return [] (no outputs) in both.

var trainLoraAttachedTask = null;
var TRAIN_LORA_POLL_MS = 5000;

function trainLoraClick(id) {
    var el = gradioApp().getElementById(id);
    if (el) el.click();
    return !!el;
}

function trainLoraRefreshCards() {
    // the webui's own hidden "refresh" buttons of the Lora card pages (txt2img and img2img)
    trainLoraClick("txt2img_lora_extra_refresh_internal");
    trainLoraClick("img2img_lora_extra_refresh_internal");
}

// Called after Start / Refresh with the running job's task id ("" when nothing runs).
function train_lora_attach_progress(taskId) {
    if (!taskId || taskId === trainLoraAttachedTask) return [];
    // the bar goes into the anchor's parent, a box of our own (style.css): never over the "Model:" line
    var anchor = gradioApp().getElementById("train_lora_progress_anchor");
    var gallery = gradioApp().getElementById("train_lora_previews");
    if (!anchor || typeof requestProgress !== "function") return [];
    trainLoraAttachedTask = taskId;
    var lastRefresh = 0;
    requestProgress(taskId, anchor, gallery, function() {
        trainLoraAttachedTask = null;
        trainLoraClick("train_lora_refresh");
        trainLoraRefreshCards();
    }, function() {
        // the bar polls twice a second; the status panel (loss plot, log, previews) every 3 s is enough
        var now = Date.now();
        if (now - lastRefresh > 3000) {
            lastRefresh = now;
            trainLoraClick("train_lora_refresh");
        }
    }, 600);  // inactivity timeout: a job may wait a while for the GPU behind other webui work
    return [];
}

function trainLoraTabVisible() {
    if (typeof document !== "undefined" && document.hidden) return false;
    var tab = typeof get_uiCurrentTabContent === "function" ? get_uiCurrentTabContent() : null;
    return !!tab && tab.id === "tab_train_lora";
}

// After a page load (a browser reload, the webui's Reload UI) the tab finds a running job by itself: the refresh
// returns its task id and the progress bar attaches. A click's answer is not touched by these refreshes
// (handlers.refresh leaves the notice alone until the job's state changes).
onUiLoaded(function() {
    trainLoraClick("train_lora_refresh");
});

// While the tab is open and no bar is attached, look for a job now and then (one started via the HTTP API).
setInterval(function() {
    if (!trainLoraAttachedTask && trainLoraTabVisible()) trainLoraClick("train_lora_refresh");
}, TRAIN_LORA_POLL_MS);

// Append "<lora:NAME:0.8>, trigger" to the txt2img prompt and switch to txt2img.
function train_lora_send_to_txt2img(snippet) {
    if (!snippet) return [];
    // gradio 3.41 (A1111): #txt2img_prompt > label > textarea; gradio 4.40 (Forge) wraps it in one more div
    var textarea = gradioApp().querySelector("#txt2img_prompt textarea");
    if (textarea) {
        var current = textarea.value.trim();
        if (current.indexOf(snippet) === -1) {
            textarea.value = current ? current + ", " + snippet : snippet;
            updateInput(textarea);  // or python would not see the new value
        }
    }
    trainLoraRefreshCards();
    switch_to_txt2img();
    return [];
}

onUiTabChange(function() {
    // entering the tab: show which checkpoint is loaded now
    var tab = typeof get_uiCurrentTabContent === "function" ? get_uiCurrentTabContent() : null;
    if (tab && tab.id === "tab_train_lora") trainLoraClick("train_lora_model_refresh");
});
