// Train LoRA tab glue: the webui progress bar for a running job, periodic panel refresh,
// "Send to txt2img", and refreshing the Lora cards once a file is written.
// Works with both front ends: A1111 1.10 (gradio 3.41) and Forge (gradio 4.40) share these webui helpers
// (gradioApp, requestProgress, onUiTabChange, switch_to_txt2img, updateInput) and the Lora refresh button ids;
// functions called through js= return [] (no outputs) in both.

var trainLoraAttachedTask = null;

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
    var container = gradioApp().getElementById("train_lora_progress");
    var gallery = gradioApp().getElementById("train_lora_previews");
    if (!container || typeof requestProgress !== "function") return [];
    trainLoraAttachedTask = taskId;
    var lastRefresh = 0;
    requestProgress(taskId, container, gallery, function() {
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
