/* The portal page of `rag serve`: ask, follow up in a conversation, check the sources, filter,
   rate; with a write key, upload and manage documents. Plain JavaScript with no build step and
   nothing fetched from elsewhere; it calls the same /v1 routes as any client, with the key its
   user enters.

   Safety rule: whatever comes from the server (answers, passages, titles, file names, messages)
   enters the page as text only: textContent, or text nodes through createElement and append.
   Nothing here assigns innerHTML, and no link takes its target from data. The Content-Security-Policy
   of the page allows no inline script besides, so a document can never run in it. */
"use strict";

(() => {
  const KEY_STORAGE = "rag.key";
  const PAGE_SIZE = 20;
  const POLL_MS = 700;
  // The earlier turns sent with a question: the last 12 messages, six questions with their answers.
  const HISTORY_MESSAGES = 12;

  const STRINGS = {
    en: {
      title: "Ask the knowledge base",
      skip: "Skip to the question",
      keyHeading: "Enter your access key",
      keyLabel: "Access key",
      keyHelp: "Your administrator gives you a key. This browser tab keeps it until you close it.",
      keySubmit: "Continue",
      keyRejected: "This key was not accepted. Check it, or ask for a new one.",
      keyMissing: "Enter the key first.",
      keyExpired: "Your key is no longer accepted. Enter a valid one.",
      forget: "Forget key",
      signOut: "Sign out",
      signinHeading: "Sign in",
      signinHelp: "Sign in with your company account. What you see is what your account may read.",
      signinButton: "Sign in",
      sessionExpired: "Your sign-in has ended. Sign in again.",
      openAccess: "Open access on this computer (no keys are set up)",
      signedIn: "Key “{name}” · {scope}",
      signedInPerson: "Signed in as {user} · {scope}",
      scope_read: "may ask and read",
      scope_write: "may also add and delete documents",
      scope_admin: "administrator",
      limitedTo: "sees only {filters}",
      askHeading: "Ask a question",
      questionLabel: "Your question",
      questionPlaceholder: "For example: How many days of annual leave do I get?",
      questionHelp: "Enter asks; Shift+Enter starts a new line.",
      followHelp: "Your question follows on from the conversation above. Enter asks; Shift+Enter starts a new line.",
      ask: "Ask",
      newConversation: "New conversation",
      emptyQuestion: "Type a question first.",
      filtersLegend: "Look only in",
      collection: "Collection",
      folder: "Folder",
      format: "File type",
      changedFrom: "Changed on or after",
      changedTo: "Changed on or before",
      all: "All",
      advanced: "Advanced",
      k: "Passages to read",
      kHelp: "Empty: the server's setting. More passages can find more, and take longer.",
      mode: "Search mode",
      modeHybrid: "Words and meaning (hybrid)",
      modeDense: "Meaning only (dense)",
      modeBm25: "Exact words only (BM25)",
      modeHelp: "Used by “Show passages only”; answers always search both ways.",
      searchOnly: "Show passages only",
      searching: "Searching the documents…",
      writing: "Read {n} passages; writing the answer…",
      answerReady: "Answer ready, citing {n} sources.",
      answerReadyOne: "Answer ready, citing 1 source.",
      notFoundStatus: "Not found in the knowledge base.",
      passagesFoundStatus: "{n} matching passages.",
      cutOff: "The answer was cut off; ask again.",
      stopped: "Stopped: the next question was asked before this answer was finished.",
      conversationHeading: "Conversation",
      searchedFor: "Searched for:",
      notFoundHeading: "Not found in the knowledge base",
      notFoundText: "The documents you may see do not answer this question, so no answer was made up. Below are the passages that were read: try other words, or fewer filters.",
      notFoundClosest: "No passage matched the question closely enough to be read. These came closest: try other words, or fewer filters.",
      notFoundNone: "No document matched at all. Try other words, or fewer filters.",
      ungrounded: "This answer cites no source: check it before you rely on it.",
      sources: "Sources",
      passagesRead: "Passages read ({n})",
      passagesClosest: "Closest passages ({n})",
      passagesFound: "Matching passages ({n})",
      match: "match {score}",
      open: "Show passage",
      openSource: "Source {n}: {title}",
      close: "Close",
      source: "File",
      location: "Where",
      highlightNote: "The answer's words are highlighted.",
      highlightQuestion: "The question's words are highlighted.",
      feedbackQuestion: "Was this answer useful?",
      up: "Yes",
      down: "No",
      commentLabel: "What was right or wrong? (optional)",
      sendComment: "Send comment",
      thanks: "Thank you: your rating was saved.",
      thanksComment: "Thank you: your comment was saved.",
      manageHeading: "Documents",
      uploadHeading: "Add documents",
      dropHere: "Drop files here, or choose them:",
      chooseFiles: "Files to add",
      uploadCollection: "Into collection",
      uploadHelp: "PDF, Word, HTML, Markdown, text, CSV and JSON; several at once. No collection: the server's upload collection.",
      jobsHeading: "Uploads and source runs",
      sending: "Sending… {percent}%",
      queued: "Waiting to be indexed",
      running: "Indexing…",
      done: "Done",
      failed: "Failed",
      counts: "{added} added, {updated} updated, {unchanged} unchanged, {skipped} skipped, {failed} failed",
      kind_skipped: "skipped",
      kind_failed: "failed",
      progressOf: "Progress of {files}",
      documentsHeading: "Indexed documents",
      documentsCaption: "Documents in the knowledge base",
      findTitle: "Find by title",
      colTitle: "Title",
      colSource: "File",
      colCollection: "Collection",
      colFormat: "Type",
      colModified: "Changed",
      colActions: "Actions",
      delete: "Delete",
      deleteLabel: "Delete {title}",
      confirmDelete: "Delete “{title}” ({collection}) from the knowledge base?",
      deleted: "Deleted “{title}”.",
      prev: "Previous",
      next: "Next",
      pageOf: "{from}–{to} of {total}",
      noDocuments: "No documents match.",
      busy: "The server is busy; try again in {seconds} seconds.",
      networkError: "The server could not be reached; check the connection and try again.",
    },
    zh: {
      title: "向知识库提问",
      skip: "跳到提问框",
      keyHeading: "输入访问密钥",
      keyLabel: "访问密钥",
      keyHelp: "密钥由管理员提供。本标签页会保存它，关闭后即忘记。",
      keySubmit: "继续",
      keyRejected: "此密钥未被接受。请检查，或申请新的密钥。",
      keyMissing: "请先输入密钥。",
      keyExpired: "您的密钥已失效，请输入有效的密钥。",
      forget: "忘记密钥",
      signOut: "退出登录",
      signinHeading: "登录",
      signinHelp: "使用公司账户登录。您看到的内容即您的账户有权阅读的内容。",
      signinButton: "登录",
      sessionExpired: "您的登录已结束，请重新登录。",
      openAccess: "本机开放访问（尚未设置密钥）",
      signedIn: "密钥“{name}” · {scope}",
      signedInPerson: "已登录：{user} · {scope}",
      scope_read: "可提问和阅读",
      scope_write: "还可添加和删除文档",
      scope_admin: "管理员",
      limitedTo: "仅可见 {filters}",
      askHeading: "提问",
      questionLabel: "您的问题",
      questionPlaceholder: "例如：我每年有几天年假？",
      questionHelp: "按 Enter 提问，Shift+Enter 换行。",
      followHelp: "您的问题将接着上面的对话。按 Enter 提问，Shift+Enter 换行。",
      ask: "提问",
      newConversation: "新对话",
      emptyQuestion: "请先输入问题。",
      filtersLegend: "只在以下范围查找",
      collection: "文档集",
      folder: "文件夹",
      format: "文件类型",
      changedFrom: "修改日期不早于",
      changedTo: "修改日期不晚于",
      all: "全部",
      advanced: "高级",
      k: "阅读的段落数",
      kHelp: "留空：使用服务器的设置。段落越多，找到的可能越多，也越慢。",
      mode: "检索方式",
      modeHybrid: "词语与语义（混合）",
      modeDense: "仅语义（向量）",
      modeBm25: "仅精确词语（BM25）",
      modeHelp: "用于“只显示段落”；回答总是同时用两种方式检索。",
      searchOnly: "只显示段落",
      searching: "正在检索文档…",
      writing: "已阅读 {n} 个段落，正在撰写回答…",
      answerReady: "回答已完成，引用了 {n} 个来源。",
      answerReadyOne: "回答已完成，引用了 1 个来源。",
      notFoundStatus: "知识库中没有找到答案。",
      passagesFoundStatus: "找到 {n} 个相关段落。",
      cutOff: "回答被中断，请重新提问。",
      stopped: "已停止：这个回答完成之前已提出下一个问题。",
      conversationHeading: "对话",
      searchedFor: "检索内容：",
      notFoundHeading: "知识库中没有找到答案",
      notFoundText: "您可以查看的文档中没有这个问题的答案，因此没有编造回答。下面是已阅读的段落：请换个说法，或减少筛选条件。",
      notFoundClosest: "没有段落与问题足够接近，因此没有阅读任何段落。以下是最接近的段落：请换个说法，或减少筛选条件。",
      notFoundNone: "没有任何文档匹配。请换个说法，或减少筛选条件。",
      ungrounded: "此回答没有引用来源，使用前请核实。",
      sources: "来源",
      passagesRead: "已阅读的段落（{n}）",
      passagesClosest: "最接近的段落（{n}）",
      passagesFound: "相关段落（{n}）",
      match: "相关度 {score}",
      open: "查看段落",
      openSource: "来源 {n}：{title}",
      close: "关闭",
      source: "文件",
      location: "位置",
      highlightNote: "回答中的词语已高亮显示。",
      highlightQuestion: "问题中的词语已高亮显示。",
      feedbackQuestion: "这个回答有帮助吗？",
      up: "有",
      down: "没有",
      commentLabel: "哪里对，哪里不对？（可选）",
      sendComment: "发送意见",
      thanks: "谢谢，您的评价已保存。",
      thanksComment: "谢谢，您的意见已保存。",
      manageHeading: "文档",
      uploadHeading: "添加文档",
      dropHere: "把文件拖到这里，或选择文件：",
      chooseFiles: "要添加的文件",
      uploadCollection: "放入文档集",
      uploadHelp: "支持 PDF、Word、HTML、Markdown、文本、CSV 和 JSON，可一次选多个。文档集留空：使用服务器的上传文档集。",
      jobsHeading: "上传与数据源同步",
      sending: "正在发送… {percent}%",
      queued: "等待建立索引",
      running: "正在建立索引…",
      done: "完成",
      failed: "失败",
      counts: "新增 {added}，更新 {updated}，未变 {unchanged}，跳过 {skipped}，失败 {failed}",
      kind_skipped: "已跳过",
      kind_failed: "失败",
      progressOf: "{files} 的进度",
      documentsHeading: "已索引的文档",
      documentsCaption: "知识库中的文档",
      findTitle: "按标题查找",
      colTitle: "标题",
      colSource: "文件",
      colCollection: "文档集",
      colFormat: "类型",
      colModified: "修改日期",
      colActions: "操作",
      delete: "删除",
      deleteLabel: "删除 {title}",
      confirmDelete: "从知识库中删除“{title}”（{collection}）吗？",
      deleted: "已删除“{title}”。",
      prev: "上一页",
      next: "下一页",
      pageOf: "第 {from}–{to} 个，共 {total} 个",
      noDocuments: "没有匹配的文档。",
      busy: "服务器繁忙，请 {seconds} 秒后重试。",
      networkError: "无法连接服务器，请检查网络后重试。",
    },
  };
  const FORMATS = {
    en: {markdown: "Markdown", pdf: "PDF", docx: "Word", html: "Web page", text: "Plain text", csv: "CSV table",
         record: "Record (JSON)"},
    zh: {markdown: "Markdown", pdf: "PDF", docx: "Word", html: "网页", text: "纯文本", csv: "CSV 表格",
         record: "记录（JSON）"},
  };
  // Words too common to be worth highlighting in a passage.
  const STOP = new Set(("a an the of to in on at for by with from and or is are was were be been being do does did " +
    "what which who whom whose when where why how many much i you he she we they it its this that these those my " +
    "our your their can could should would will shall may might must there about into than then as if not no yes")
    .split(" "));
  const HAN = /\p{Script=Han}/u;
  // Words: a run of Han characters, or a run of other letters and digits.
  const TOKEN = /\p{Script=Han}+|(?:(?!\p{Script=Han})[\p{L}\p{N}])+/gu;

  const state = {
    key: "",
    oidc: false,  // people sign in with the identity provider here (GET /auth/status)
    me: null,
    lang: (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en",
    facets: null,
    run: null,          // the AbortController of the question being answered (the latest turn's)
    turns: [],          // the conversation, oldest first: see beginTurn
    turnsMade: 0,       // numbers the turns' element ids, never reused
    docs: null,         // the last page of /v1/documents
    docsOffset: 0,
    docsRequest: 0,
  };

  const $ = (id) => document.getElementById(id);

  function t(name, vars = {}) {
    const text = STRINGS[state.lang][name] ?? STRINGS.en[name] ?? name;
    return text.replace(/\{(\w+)\}/g, (_, v) => String(vars[v] ?? ""));
  }

  /** An element with attributes (on* are listeners; `text` is its text) and children, strings
      becoming text nodes: the one way this page makes content. */
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    node.append(...children.filter((c) => c !== null && c !== undefined && c !== false)
      .map((c) => (typeof c === "number" ? String(c) : c)));
    return node;
  }

  // -- language -----------------------------------------------------------------------------

  /** The language of a question, for the page's own words: Chinese when Han characters carry
      it, English when Latin letters do, otherwise the one in use. */
  function languageOf(text) {
    const han = (text.match(/\p{Script=Han}/gu) || []).length;
    const latin = (text.match(/\p{Script=Latin}+/gu) || []).length;  // words, as a Han character is one
    if (han && han >= latin) return "zh";
    if (latin) return "en";
    return state.lang;
  }

  function setLanguage(lang) {
    if (lang === state.lang && document.documentElement.lang) return;
    state.lang = lang;
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.title = t("title");
    translate(document);
    $("documents-caption").textContent = t("documentsCaption");
    renderWho();
    fillFilters();
    renderDocuments();
  }

  /** The page's own words within root, in the language in use (a turn's, when it is made). */
  function translate(root) {
    for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    for (const node of root.querySelectorAll("[data-i18n-placeholder]")) {
      node.placeholder = t(node.dataset.i18nPlaceholder);
    }
    for (const node of root.querySelectorAll("[data-rating]")) {
      node.setAttribute("aria-label", t("feedbackQuestion") + " " + t(node.dataset.rating));
    }
  }

  const formatName = (name) => FORMATS[state.lang][name] || FORMATS.en[name] || name || "—";
  const day = (seconds) => new Date(seconds * 1000).toISOString().slice(0, 10);
  const nextDay = (date) => new Date(Date.parse(date + "T00:00:00Z") + 86400000).toISOString().slice(0, 10);

  // -- talking to the server ------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail, retryAfter = null) {
      super(detail);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  /** Every request says it comes from this page: the server honours the sign-in cookie only
      then, and a page of another site cannot send this header. */
  function headers(extra = {}) {
    const mine = {...extra, "X-Rag-Page": "1"};
    return state.key ? {...mine, Authorization: "Bearer " + state.key} : mine;
  }

  /** Whether people sign in with the company's identity provider here, instead of a key. */
  async function loadSignInMode() {
    try {
      const response = await fetch("/auth/status");
      state.oidc = response.ok && Boolean((await response.json()).oidc);
    } catch {
      state.oidc = false;
    }
  }

  async function signOut() {
    try {
      await fetch("/auth/logout", {method: "POST", headers: headers()});
    } finally {
      askForKey("");
    }
  }

  function detailOf(data) {
    if (!data) return "";
    if (typeof data.detail === "string") return data.detail;
    if (Array.isArray(data.detail)) return data.detail.map((d) => d.msg || "").filter(Boolean).join("; ");
    return "";
  }

  async function apiError(response) {
    let detail = "";
    try {
      detail = detailOf(await response.json());
    } catch {
      detail = response.statusText;
    }
    return new ApiError(response.status, detail || `HTTP ${response.status}`, response.headers.get("Retry-After"));
  }

  async function api(path, {method = "GET", body, signal} = {}) {
    let response;
    try {
      response = await fetch(path, {
        method, signal, body: body === undefined ? undefined : JSON.stringify(body),
        headers: headers(body === undefined ? {} : {"Content-Type": "application/json"}),
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, t("networkError"));
    }
    if (!response.ok) throw await apiError(response);
    return response.json();
  }

  /** What went wrong, in words a person can act on. */
  function explain(error) {
    if (error.status === 503 && error.retryAfter) return t("busy", {seconds: error.retryAfter});
    if (error.status === 0) return t("networkError");
    return error.message;
  }

  /** What went wrong, for any error: the server's refusal, or fetch (TypeError) or this page failing. */
  function problem(error) {
    if (error instanceof ApiError) return explain(error);
    return error instanceof TypeError ? t("networkError") : String(error.message || error);
  }

  function fail(error) {
    if (error.name === "AbortError") return;
    if (error instanceof ApiError && error.status === 401) {
      askForKey(t(state.oidc && !state.key ? "sessionExpired" : "keyExpired"));
      return;
    }
    showError(problem(error));
  }

  /** Server-Sent Events from a fetch response: {name, data} with data parsed as JSON. */
  async function* serverEvents(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let carriage = false;  // a chunk ended in \r: the next may start with its \n
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      let text = (carriage ? "\r" : "") + value;
      carriage = text.endsWith("\r");
      if (carriage) text = text.slice(0, -1);
      buffer += text.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (!line || line.startsWith(":")) continue;  // a comment: the server's keep-alive ping
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let content = colon < 0 ? "" : line.slice(colon + 1);
          if (content.startsWith(" ")) content = content.slice(1);
          if (field === "event") name = content;
          else if (field === "data") data.push(content);
        }
        if (!data.length) continue;
        try {
          yield {name, data: JSON.parse(data.join("\n"))};
        } catch (error) {
          if (!(error instanceof SyntaxError)) throw error;
        }
      }
    }
  }

  // -- the key --------------------------------------------------------------------------------

  function askForKey(message) {
    state.me = null;
    state.key = "";
    sessionStorage.removeItem(KEY_STORAGE);
    clearConversation();  // what the last key was shown is not for the next one
    $("app").hidden = true;
    $("forget").hidden = true;
    $("key-section").hidden = false;
    $("key-form").hidden = Boolean(state.oidc);
    $("signin-area").hidden = !state.oidc;
    $("key-heading").textContent = t(state.oidc ? "signinHeading" : "keyHeading");
    const shown = state.oidc ? $("signin-error") : $("key-error");
    shown.textContent = message || "";
    shown.hidden = !message;
    renderWho();
    (state.oidc ? $("signin") : $("key-input")).focus();
  }

  async function signIn(candidate) {
    state.key = candidate;
    let me;
    try {
      me = await api("/v1/key");
    } catch (error) {
      if (error.status === 401) askForKey(candidate ? t("keyRejected") : (error.message.includes("no keys") ? error.message : ""));
      else askForKey(explain(error));
      return;
    }
    if (candidate) sessionStorage.setItem(KEY_STORAGE, candidate);
    state.me = me;
    $("key-input").value = "";
    $("key-section").hidden = true;
    $("app").hidden = false;
    $("forget").hidden = Boolean(me.open);
    $("forget").textContent = t(signedInPerson() ? "signOut" : "forget");
    renderWho();
    const writes = me.open || me.scope === "write" || me.scope === "admin";
    $("manage").hidden = !writes;
    const only = (me.filters || []).filter((f) => /^collection=[^*?[]+$/.test(f));
    if (only.length === 1 && !$("upload-collection").value) $("upload-collection").value = only[0].slice("collection=".length);
    $("question").focus();
    await loadFacets();
    if (writes) await Promise.all([loadDocuments(), loadJobs()]);
  }

  /** Signed in with the identity provider (no key): sign-out ends the session cookie. */
  function signedInPerson() {
    return Boolean(state.me && state.me.name === "oidc" && !state.key);
  }

  function renderWho() {
    const me = state.me;
    if (!me) $("who").textContent = "";
    else if (me.open) $("who").textContent = t("openAccess");
    else if (me.user && !me.on_behalf) $("who").textContent = t("signedInPerson", {user: me.user, scope: t("scope_" + me.scope)});
    else {
      const limits = me.filters && me.filters.length ? " · " + t("limitedTo", {filters: me.filters.join(", ")}) : "";
      $("who").textContent = t("signedIn", {name: me.name, scope: t("scope_" + me.scope)}) + limits;
    }
  }

  // -- filters --------------------------------------------------------------------------------

  async function loadFacets() {
    try {
      state.facets = await api("/v1/facets");
    } catch (error) {
      if (error.status === 401) fail(error);
      state.facets = null;
    }
    fillFilters();
  }

  function fillSelect(id, values, label) {
    const select = $(id);
    const chosen = select.value;
    select.replaceChildren(el("option", {value: ""}, t("all")),
      ...values.map((v) => el("option", {value: v.filter}, `${label(v.name)} (${v.documents})`)));
    select.value = values.some((v) => v.filter === chosen) ? chosen : "";
    // One choice is no choice: shown only when it narrows something down.
    $(id + "-box").hidden = values.length < 2 && !select.value;
  }

  function fillFilters() {
    const facets = state.facets;
    if (!facets) {
      $("filters").hidden = true;
      return;
    }
    fillSelect("f-collection", facets.collections, (name) => name);
    fillSelect("f-folder", facets.folders, (name) => name);
    fillSelect("f-format", facets.formats, formatName);
    const range = facets.mtime;
    for (const id of ["f-from", "f-to"]) {
      $(id + "-box").hidden = !range || day(range.first) === day(range.last);
      if (range) {
        $(id).min = day(range.first);
        $(id).max = day(range.last);
      }
    }
    $("filters").hidden = [...$("filters").querySelectorAll(".filter")].every((box) => box.hidden);
    $("collection-names").replaceChildren(...facets.collections.map((c) => el("option", {value: c.name})));
  }

  /** The filter expressions the controls stand for (the key's own are added by the server). */
  function chosenFilters() {
    const filters = ["f-collection", "f-folder", "f-format"].map((id) => $(id).value).filter(Boolean);
    if ($("f-from").value) filters.push(`mtime>=${$("f-from").value}`);
    if ($("f-to").value) filters.push(`mtime<${nextDay($("f-to").value)}`);
    return filters;
  }

  function chosenK() {
    const k = Number.parseInt($("k").value, 10);
    return k >= 1 && k <= 100 ? k : undefined;
  }

  // -- asking ---------------------------------------------------------------------------------

  function setStatus(text) {
    $("status").textContent = text;
  }

  function showError(text) {
    $("error").textContent = text;
    $("error").hidden = !text;
  }

  function question() {
    const text = $("question").value.trim();
    if (!text) {
      showError(t("emptyQuestion"));
      $("question").focus();
      return "";
    }
    setLanguage(languageOf(text));
    return text;
  }

  // -- the conversation -----------------------------------------------------------------------

  /* Each question is a turn of the thread, oldest at the top: its own elements (cloned from
     #turn-template), passages, citations and rating. The latest turn's parts have the bare ids
     ("answer", "citations", "rate-up"), earlier turns' the same ids with "-<n>" after. The
     conversation lives in this page only: a reload, "New conversation" or another key ends it. */

  /** The earlier turns as /v1/ask and /v1/search take them, oldest first: each question that
      was answered ("I don't know" included) with the answer's text as received. A question that
      failed or was stopped, and "Show passages only", are not sent. */
  function history() {
    const messages = [];
    for (const turn of state.turns) {
      if (turn.reply === null) continue;
      messages.push({role: "user", content: turn.question}, {role: "assistant", content: turn.reply});
    }
    return messages.slice(-HISTORY_MESSAGES);
  }

  const latestTurn = () => state.turns[state.turns.length - 1];
  const camel = (name) => name.replace(/-(\w)/g, (_, c) => c.toUpperCase());

  /** Ids for the turn's parts: the bare part names for the latest turn, numbered for the others. */
  function nameParts(turn, latest) {
    const id = (part) => (latest ? part : `${part}-${turn.n}`);
    for (const node of turn.node.querySelectorAll("[data-part]")) node.id = id(node.dataset.part);
    for (const label of turn.node.querySelectorAll("label[data-label-for]")) label.htmlFor = id(label.dataset.labelFor);
    turn.node.setAttribute("aria-labelledby", id("turn-question"));
  }

  /** A new turn at the end of the thread, for a question (one still being answered is stopped). */
  function beginTurn(text) {
    stopRun();
    showError("");
    const node = $("turn-template").content.firstElementChild.cloneNode(true);
    translate(node);
    const parts = {};
    for (const part of node.querySelectorAll("[data-part]")) parts[camel(part.dataset.part)] = part;
    const turn = {
      n: ++state.turnsMade, question: text,
      query: "",       // what the server searched: the question, or a follow-up's standalone form
      answer: null,    // the `answer` event's data
      reply: null,     // the answer's text once it has come whole: then the turn is history
      rating: null, run: new AbortController(), node, parts,
    };
    parts.turnQuestion.textContent = text;
    parts.rateUp.addEventListener("click", () => rate(turn, "up"));
    parts.rateDown.addEventListener("click", () => rate(turn, "down"));
    parts.commentForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const comment = parts.comment.value.trim();
      if (comment) rate(turn, turn.rating || "down", comment);
    });
    if (latestTurn()) nameParts(latestTurn(), false);
    nameParts(turn, true);
    state.turns.push(turn);
    state.run = turn.run;
    $("thread").append(node);
    $("result").hidden = false;
    setTurnState(turn, "waiting");
    renderConversation();
    return turn;
  }

  /** waiting, then streaming, answered, not-found, passages, failed or stopped; #result says the latest's. */
  function setTurnState(turn, value) {
    turn.node.dataset.state = value;
    if (turn === latestTurn()) $("result").dataset.state = value;
  }

  function endStreaming(turn) {
    turn.parts.answer.classList.remove("streaming");
    turn.parts.answer.setAttribute("aria-busy", "false");
  }

  /** Stops the question being answered, if any: its turn keeps what came, marked as stopped. */
  function stopRun() {
    const run = state.run;
    if (!run) return;
    state.run = null;
    run.abort();
    const turn = state.turns.find((each) => each.run === run);
    if (turn && turn.reply === null) {
      endStreaming(turn);
      setTurnState(turn, "stopped");
      note(turn, t("stopped"));
    }
  }

  /** A question or search that failed, unless a newer one has replaced it: said in its turn too. */
  function failRun(turn, error) {
    if (state.run !== turn.run || error.name === "AbortError") return;
    setTurnState(turn, "failed");
    setStatus("");
    note(turn, problem(error), true);
    if (!$("question").value) $("question").value = turn.question;  // to ask again
    fail(error);
  }

  /** "New conversation": the thread and its history gone, the question box ready for a first question. */
  function newConversation() {
    clearConversation();
    setStatus("");
    showError("");
    $("question").focus();
  }

  function clearConversation() {
    stopRun();
    state.turns = [];
    $("thread").replaceChildren();
    $("result").hidden = true;
    $("result").dataset.state = "";
    renderConversation();
  }

  /** The "New conversation" button while there is one; the help says a question follows on. */
  function renderConversation() {
    $("new-conversation").hidden = !state.turns.length;
    const help = $("question-help");
    help.dataset.i18n = history().length ? "followHelp" : "questionHelp";
    help.textContent = t(help.dataset.i18n);
  }

  /** The "Searched for" line: what the server searched, a follow-up's standalone form. */
  function showSearched(turn, query) {
    if (typeof query !== "string" || !query) return;
    turn.query = query;
    turn.parts.searchedQuery.textContent = query;
    turn.parts.searched.classList.toggle("rewritten", query !== turn.question);
    turn.parts.searched.hidden = false;
  }

  async function ask() {
    const text = question();
    if (!text) return;
    const earlier = history();
    const turn = beginTurn(text);
    $("question").value = "";  // it is in the thread now; given back if it fails
    const {run, parts} = turn;
    const body = {question: text, stream: true, history: earlier, filters: chosenFilters(), k: chosenK()};
    const streamed = document.createTextNode("");
    parts.answer.append(streamed);
    parts.answer.classList.add("streaming");
    parts.answer.setAttribute("aria-busy", "true");
    setStatus(t("searching"));
    let finished = false;
    try {
      const response = await fetch("/v1/ask", {
        method: "POST", signal: run.signal, body: JSON.stringify(body),
        headers: headers({"Content-Type": "application/json", Accept: "text/event-stream"}),
      });
      if (!response.ok) throw await apiError(response);
      for await (const event of serverEvents(response)) {
        if (event.name === "passages") {
          showSearched(turn, event.data.query);
          showPassages(turn, event.data.passages, "passagesRead", false);
          if (event.data.passages.length) setStatus(t("writing", {n: event.data.passages.length}));
        } else if (event.name === "token") {
          streamed.appendData(event.data.text);
          setTurnState(turn, "streaming");
        } else if (event.name === "answer") {
          finished = true;
          await showAnswer(turn, event.data, body.filters);
        } else if (event.name === "error") {
          throw new ApiError(event.data.status, event.data.detail);
        }
      }
      if (!finished) throw new ApiError(-1, t("cutOff"));
    } catch (error) {
      failRun(turn, error);
    } finally {
      if (state.run === run) {
        endStreaming(turn);
        state.run = null;
      }
    }
  }

  async function showAnswer(turn, data, filters) {
    const {parts} = turn;
    turn.answer = data;
    turn.reply = data.answer;
    showSearched(turn, data.query);
    renderConversation();
    const byNumber = new Map(data.passages.map((p) => [p.number, p]));
    parts.feedback.hidden = !data.id;
    if (data.abstained) {
      parts.answer.replaceChildren();
      parts.answer.hidden = true;
      parts.notFound.hidden = false;
      setStatus(t("notFoundStatus"));
      if (data.passages.length) {
        parts.notFoundText.textContent = t("notFoundText");
        showPassages(turn, data.passages, "passagesRead", true);
      } else {
        await showClosest(turn, turn.query || turn.question, filters);
      }
      note(turn, data.warnings.join(" "));
      setTurnState(turn, "not-found");
      return;
    }
    parts.answer.replaceChildren(...answerNodes(turn, data.answer, byNumber));
    const citations = data.citations.map((c) => {
      const passage = byNumber.get(c.number) || {...c, text: c.quote};
      const link = el("a", {href: "#" + passageId(turn, c.number), class: "source-link"}, `[${c.number}] ${c.title}`);
      link.addEventListener("click", (event) => {
        event.preventDefault();
        openPassage(turn, passage);
      });
      return el("li", {}, link, " ", el("span", {class: "meta"}, [c.source, c.location].filter(Boolean).join(" · ")));
    });
    parts.citations.replaceChildren(...citations);
    parts.sourcesBox.hidden = !citations.length;
    note(turn, [data.grounded ? "" : t("ungrounded"), ...data.warnings].filter(Boolean).join(" "));
    setStatus(data.citations.length === 1 ? t("answerReadyOne") : t("answerReady", {n: data.citations.length}));
    setTurnState(turn, "answered");
  }

  function note(turn, text, error = false) {
    const line = turn.parts.answerNote;
    line.textContent = text;
    line.classList.toggle("error", error);
    line.hidden = !text;
  }

  const passageId = (turn, number) => `passage-${turn.n}-${number}`;

  /** The answer's text with each [n] a link that opens passage n of this turn. */
  function answerNodes(turn, text, byNumber) {
    const nodes = [];
    let last = 0;
    for (const match of text.matchAll(/\[(\d+)\]/g)) {
      nodes.push(text.slice(last, match.index));
      const passage = byNumber.get(Number(match[1]));
      if (passage) {
        const link = el("a", {href: "#" + passageId(turn, passage.number), class: "cite",
          "aria-label": t("openSource", {n: passage.number, title: passage.title})}, match[0]);
        link.addEventListener("click", (event) => {
          event.preventDefault();
          openPassage(turn, passage);
        });
        nodes.push(link);
      } else {
        nodes.push(match[0]);
      }
      last = match.index + match[0].length;
    }
    nodes.push(text.slice(last));
    return nodes;
  }

  /** When no passage was good enough to be read, the closest ones to what was searched, so a
      person sees why. */
  async function showClosest(turn, query, filters) {
    const {parts} = turn;
    try {
      const found = await api("/v1/search", {method: "POST", signal: turn.run.signal,
        body: {question: query, filters, k: 3}});
      const passages = found.hits.map(hitPassage);
      parts.notFoundText.textContent = passages.length ? t("notFoundClosest") : t("notFoundNone");
      if (passages.length) showPassages(turn, passages, "passagesClosest", true);
    } catch (error) {
      parts.notFoundText.textContent = t("notFoundNone");
      if (error.name === "AbortError") throw error;
    }
  }

  /** "Show passages only": a turn of the thread too, searched in the conversation's context,
      but no turn of its history (it has no answer). */
  async function searchOnly() {
    const text = question();
    if (!text) return;
    const earlier = history();
    const turn = beginTurn(text);
    turn.parts.answer.hidden = true;
    setStatus(t("searching"));
    try {
      const found = await api("/v1/search", {method: "POST", signal: turn.run.signal,
        body: {question: text, history: earlier, filters: chosenFilters(), k: chosenK(), mode: $("mode").value}});
      showSearched(turn, found.query);
      const passages = found.hits.map(hitPassage);
      showPassages(turn, passages, "passagesFound", true);
      setStatus(t("passagesFoundStatus", {n: passages.length}));
      setTurnState(turn, "passages");
    } catch (error) {
      failRun(turn, error);
    } finally {
      if (state.run === turn.run) state.run = null;
    }
  }

  /** A search hit in the shape of an answer's passage. */
  function hitPassage(hit, index) {
    const meta = hit.metadata || {};
    const location = meta.page != null ? `page ${meta.page}` : (meta.headings || []).join(" > ");
    return {number: index + 1, text: hit.text, doc_id: hit.doc_id, source: hit.source,
            title: meta.title || hit.doc_id, location, score: hit.score};
  }

  function showPassages(turn, passages, heading, open) {
    const {parts} = turn;
    parts.passagesSummary.textContent = t(heading, {n: passages.length});
    parts.passages.replaceChildren(...passages.map((p) => {
      // Scores mean something only within one search mode: shown where the mode was chosen.
      const score = heading === "passagesFound" && typeof p.score === "number" ? t("match", {score: p.score.toFixed(2)}) : "";
      const meta = [p.source, p.location, score].filter(Boolean).join(" · ");
      const button = el("button", {type: "button", class: "quiet", "aria-label": `${t("open")}: [${p.number}] ${p.title}`},
        t("open"));
      button.addEventListener("click", () => openPassage(turn, p));
      return el("li", {id: passageId(turn, p.number), class: "passage"},
        el("div", {class: "passage-head"}, el("span", {class: "badge"}, `[${p.number}]`), " ",
          el("strong", {}, p.title || p.doc_id), " ", el("span", {class: "meta"}, meta)),
        el("p", {class: "passage-snippet"}, p.text),
        button);
    }));
    parts.passagesBox.hidden = !passages.length;
    parts.passagesBox.open = open;
  }

  // -- the passage viewer ---------------------------------------------------------------------

  function answerTerms(text) {
    const words = new Set();
    const pairs = new Set();  // Chinese has no spaces: pairs of characters stand for its words
    for (const [word] of text.replace(/\[\d+\]/g, " ").matchAll(TOKEN)) {
      if (HAN.test(word)) {
        for (let i = 0; i + 1 < word.length; i++) pairs.add(word.slice(i, i + 2));
      } else {
        const lower = word.toLowerCase();
        if (!STOP.has(lower) && (lower.length > 1 || /\d/.test(lower))) words.add(lower);
      }
    }
    return {words, pairs};
  }

  /** The passage as text nodes, with the answer's words in <mark>s. */
  function highlighted(text, answer) {
    const ranges = [];
    if (answer) {
      const {words, pairs} = answerTerms(answer);
      for (const match of text.matchAll(TOKEN)) {
        const word = match[0];
        if (HAN.test(word)) {
          for (let i = 0; i + 1 < word.length; i++) {
            if (pairs.has(word.slice(i, i + 2))) ranges.push([match.index + i, match.index + i + 2]);
          }
        } else if (words.has(word.toLowerCase())) {
          ranges.push([match.index, match.index + word.length]);
        }
      }
    }
    const merged = [];
    for (const [start, end] of ranges) {
      const previous = merged[merged.length - 1];
      // Marks that touch, or are apart by spaces only, read as one.
      if (previous && /^\s*$/.test(text.slice(previous[1], start))) previous[1] = Math.max(previous[1], end);
      else merged.push([start, end]);
    }
    const fragment = document.createDocumentFragment();
    let last = 0;
    for (const [start, end] of merged) {
      fragment.append(text.slice(last, start), el("mark", {}, text.slice(start, end)));
      last = end;
    }
    fragment.append(text.slice(last));
    return {fragment, marks: merged.length};
  }

  function openPassage(turn, passage) {
    // The answer's words; without an answer, those searched for, to show why the passage came up.
    const answered = turn.answer && !turn.answer.abstained ? turn.answer.answer : "";
    const {fragment, marks} = highlighted(passage.text || "", answered || turn.query || turn.question);
    $("viewer-title").textContent = passage.title || passage.doc_id;
    $("viewer-source").textContent = passage.source || passage.doc_id;
    $("viewer-location").textContent = passage.location || "—";
    $("viewer-note").textContent = marks ? t(answered ? "highlightNote" : "highlightQuestion") : "";
    $("viewer-text").replaceChildren(fragment);
    const viewer = $("viewer");
    if (!viewer.open) viewer.showModal();
    const first = $("viewer-text").querySelector("mark");
    if (first) first.scrollIntoView({block: "nearest"});
  }

  // -- feedback -------------------------------------------------------------------------------

  /** A rating (and comment) of one turn's answer, by the id its `answer` event gave it. */
  async function rate(turn, rating, comment) {
    const id = turn.answer && turn.answer.id;
    if (!id) return;
    const {parts} = turn;
    turn.rating = rating;
    parts.rateUp.setAttribute("aria-pressed", String(rating === "up"));
    parts.rateDown.setAttribute("aria-pressed", String(rating === "down"));
    const body = {answer_id: id, rating};
    if (comment) body.comment = comment;
    try {
      await api("/v1/feedback", {method: "POST", body});
      parts.feedbackStatus.textContent = comment ? t("thanksComment") : t("thanks");
      parts.commentForm.hidden = false;
    } catch (error) {
      if (error.status === 401) fail(error);
      else parts.feedbackStatus.textContent = explain(error);
    }
  }

  // -- uploads --------------------------------------------------------------------------------

  function uploadFiles(list) {
    const files = [...list];
    if (!files.length) return;
    const collection = $("upload-collection").value.trim();
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    if (collection) form.append("collection", collection);
    const job = jobRow(files.map((f) => f.name), collection);
    // XMLHttpRequest rather than fetch: only it reports how much of an upload has been sent.
    const request = new XMLHttpRequest();
    request.open("POST", "/v1/documents");
    for (const [name, value] of Object.entries(headers())) request.setRequestHeader(name, value);
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) job.sending(event.loaded / event.total);
    });
    request.addEventListener("load", () => {
      let data = null;
      try {
        data = JSON.parse(request.responseText);
      } catch {
        data = null;
      }
      if (request.status === 202 && data) job.follow(data);
      else if (request.status === 401) fail(new ApiError(401, detailOf(data)));
      else job.failed(detailOf(data) || `HTTP ${request.status}`);
    });
    request.addEventListener("error", () => job.failed(t("networkError")));
    request.send(form);
    $("files").value = "";
  }

  /** A row of the job panel, following one upload from sending to indexed. */
  function jobRow(names, collection) {
    const progress = el("progress", {max: "1", value: "0", "aria-label": t("progressOf", {files: names.join(", ")})});
    const status = el("span", {class: "job-state"}, t("sending", {percent: 0}));
    const counts = el("p", {class: "help"});
    const problems = el("ul", {class: "problems"});
    const row = el("li", {class: "job", "data-state": "sending"},
      el("div", {class: "job-head"}, el("strong", {class: "job-files"}, names.join(", ")), " ",
        el("span", {class: "meta"}, "→ " + (collection || "…"))),
      progress, status, counts, problems);
    $("jobs-box").hidden = false;
    $("jobs").prepend(row);

    function update(job) {
      row.dataset.state = job.state;
      row.dataset.job = job.id;
      row.querySelector(".meta").textContent = "→ " + job.collection;
      status.textContent = t(job.state);
      if (job.state === "queued" || job.state === "running") progress.removeAttribute("value");
      else progress.value = job.state === "done" ? 1 : 0;
      const c = job.counts || {};
      counts.textContent = job.state === "done" ? t("counts", c) : (job.error || "");
      problems.replaceChildren(...(job.problems || []).map((p) =>
        el("li", {class: p.kind}, el("strong", {}, p.path), ` (${t("kind_" + p.kind)}): ${p.reason}`)));
    }

    return {
      show: update,
      sending(fraction) {
        progress.value = fraction;
        status.textContent = t("sending", {percent: Math.round(fraction * 100)});
      },
      failed(message) {
        row.dataset.state = "failed";
        progress.value = 0;
        status.textContent = t("failed");
        counts.textContent = message;
      },
      async follow(job) {
        update(job);
        while (job.state === "queued" || job.state === "running") {
          await new Promise((resolve) => setTimeout(resolve, POLL_MS));
          try {
            job = await api(`/v1/jobs/${encodeURIComponent(job.id)}`);
          } catch (error) {
            if (error.status === 401) fail(error);
            else counts.textContent = explain(error);
            return;
          }
          update(job);
        }
        if (job.state === "done") {
          await loadFacets();
          await loadDocuments();
        }
      },
    };
  }

  // -- documents ------------------------------------------------------------------------------

  /** A case-insensitive glob for `title=`: each letter as [aA], the glob's own characters in brackets. */
  function titleGlob(text) {
    let glob = "*";
    for (const c of text) {
      const lower = c.toLowerCase();
      const upper = c.toUpperCase();
      if ("*?[".includes(c)) glob += `[${c}]`;
      else if (lower !== upper && lower.length === 1 && upper.length === 1) glob += `[${lower}${upper}]`;
      else glob += c;
    }
    return glob + "*";
  }

  /** The latest jobs the key may see (its uploads; for an admin key, every upload and every
      scheduled run of a source), shown as the page's own uploads are, and followed while running. */
  async function loadJobs() {
    let jobs;
    try {
      jobs = await api("/v1/jobs");
    } catch (error) {
      if (error.status === 401) fail(error);
      return;
    }
    const shown = new Set([...$("jobs").children].map((row) => row.dataset.job));
    for (const job of jobs.slice().reverse()) {  // oldest first: each new row goes on top
      if (shown.has(job.id)) continue;
      const row = jobRow(job.files, job.collection);
      if (job.state === "queued" || job.state === "running") row.follow(job);
      else row.show(job);
    }
  }

  async function loadDocuments() {
    const request = ++state.docsRequest;
    const params = new URLSearchParams({offset: String(state.docsOffset), limit: String(PAGE_SIZE)});
    const find = $("doc-search").value.trim();
    if (find) params.append("filter", "title=" + titleGlob(find));
    let page;
    try {
      page = await api("/v1/documents?" + params);
    } catch (error) {
      if (request === state.docsRequest) fail(error);
      return;
    }
    if (request !== state.docsRequest) return;  // a later search has been sent meanwhile
    if (!page.documents.length && page.total && state.docsOffset) {  // the last page was emptied
      state.docsOffset = Math.max(0, (Math.ceil(page.total / PAGE_SIZE) - 1) * PAGE_SIZE);
      await loadDocuments();
      return;
    }
    state.docs = page;
    renderDocuments();
  }

  function renderDocuments() {
    const page = state.docs;
    if (!page) return;
    const rows = page.documents.map((d) => {
      const title = d.title || d.doc_id;
      const remove = el("button", {type: "button", class: "danger", "aria-label": t("deleteLabel", {title})}, t("delete"));
      remove.addEventListener("click", () => removeDocument(d, remove));
      return el("tr", {},
        el("td", {}, title),
        el("td", {class: "source"}, d.source),
        el("td", {}, d.collection),
        el("td", {}, formatName(d.format)),
        el("td", {}, d.mtime ? day(d.mtime) : "—"),
        el("td", {}, remove));
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", {colspan: "6"}, t("noDocuments"))));
    $("documents-body").replaceChildren(...rows);
    const from = page.total ? page.offset + 1 : 0;
    $("page-info").textContent = t("pageOf", {from, to: page.offset + page.documents.length, total: page.total});
    $("prev-page").disabled = page.offset === 0;
    $("next-page").disabled = page.offset + page.documents.length >= page.total;
  }

  async function removeDocument(d, button) {
    const title = d.title || d.doc_id;
    if (!window.confirm(t("confirmDelete", {title, collection: d.collection}))) return;
    button.disabled = true;
    try {
      await api(`/v1/documents/${encodeURIComponent(d.doc_id)}?collection=${encodeURIComponent(d.collection)}`,
        {method: "DELETE"});
    } catch (error) {
      button.disabled = false;
      fail(error);
      return;
    }
    setStatus(t("deleted", {title}));
    await loadDocuments();
    await loadFacets();
  }

  // -- wiring ---------------------------------------------------------------------------------

  function wire() {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const candidate = $("key-input").value.trim();
      if (!candidate) {
        $("key-error").textContent = t("keyMissing");
        $("key-error").hidden = false;
        $("key-input").focus();
        return;
      }
      signIn(candidate);
    });
    $("forget").addEventListener("click", () => (signedInPerson() ? signOut() : askForKey("")));
    $("ask-form").addEventListener("submit", (event) => {
      event.preventDefault();
      ask();
    });
    $("question").addEventListener("keydown", (event) => {
      // Enter asks; Shift+Enter is a new line; Enter that confirms an input method's composition
      // (Chinese, Japanese) is the input method's.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        $("ask-form").requestSubmit();
      }
    });
    $("search-button").addEventListener("click", searchOnly);
    $("new-conversation").addEventListener("click", newConversation);
    $("viewer-close").addEventListener("click", () => $("viewer").close());
    $("viewer").addEventListener("click", (event) => {  // a click on the backdrop closes it
      if (event.target === $("viewer")) $("viewer").close();
    });

    $("files").addEventListener("change", () => uploadFiles($("files").files));
    const zone = $("dropzone");
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      if (!$("manage").hidden) uploadFiles(event.dataTransfer.files);
    });
    // A file dropped beside the zone must not replace the page with the file.
    for (const kind of ["dragover", "drop"]) window.addEventListener(kind, (event) => event.preventDefault());

    let searchTimer = 0;
    $("doc-search").addEventListener("input", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => {
        state.docsOffset = 0;
        loadDocuments();
      }, 250);
    });
    $("prev-page").addEventListener("click", () => {
      state.docsOffset = Math.max(0, state.docsOffset - PAGE_SIZE);
      loadDocuments();
    });
    $("next-page").addEventListener("click", () => {
      state.docsOffset += PAGE_SIZE;
      loadDocuments();
    });
  }

  function start() {
    document.documentElement.lang = "";
    setLanguage(state.lang);
    wire();
    loadSignInMode().then(() => signIn(sessionStorage.getItem(KEY_STORAGE) || ""));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
